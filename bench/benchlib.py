"""Helpers shared by the benchmarks (bench/run, bench/cluster): servers
started and stopped, CPU read from /proc, a throwaway PostgreSQL, wrk."""
import glob
import os
import re
import resource
import signal
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("VIDEOSTREAMS_BUILD", os.path.join(ROOT, "build"))
ALL_CPUS = sorted(os.sched_getaffinity(0))
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def start(argv, name, servers):
    """Starts a server, adds it to `servers`, returns its port. With
    BENCH_LOG_DIR set, its stderr is kept there, each line time-stamped
    (name.log)."""
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    servers.append(proc)
    log_dir = os.environ.get("BENCH_LOG_DIR")
    log = (open(os.path.join(log_dir, re.sub(r"\W+", "_", name) + ".log"),
                "a") if log_dir else None)

    def keep(line):
        if log:
            log.write(f"{time.time():.3f} {line}")
            log.flush()

    deadline = time.time() + 10
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        keep(line)
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        if m:
            # Keep reading, or a server that logs a lot blocks on the pipe.
            threading.Thread(target=lambda: [keep(x) for x in proc.stderr],
                             daemon=True).start()
            return int(m.group(1))
    raise RuntimeError(f"{name} did not start")


def stop(servers):
    for proc in servers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in servers:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pin(pids, cpus):
    """Moves every thread of each process in `pids` to `cpus`."""
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*"):
            try:
                os.sched_setaffinity(int(os.path.basename(task)), cpus)
            except (ProcessLookupError, FileNotFoundError):
                pass  # a thread that just ended


def postgres_pids(data_dir):
    """The postmaster of `data_dir` and its children (backends, writers);
    new backends inherit the postmaster's affinity."""
    with open(os.path.join(data_dir, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    pids = [postmaster]
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(stat.split("/")[2]))
    return pids


# Thread names of a node, as the kernel shows them, and what they are. CAF
# 0.17 names its scheduler's workers "caf.multiplexer", like the
# middleman's thread, so the two count together.
THREAD_GROUPS = {"videostreams": "http", "caf.multiplexer": "caf",
                 "caf.actor": "detached", "caf.clock": "clock"}


def thread_ticks(pid):
    """CPU ticks of a process's threads, summed per group of
    THREAD_GROUPS ("other" for the rest)."""
    result = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        group = THREAD_GROUPS.get(name, "other")
        result[group] = result.get(group, 0) + int(fields[11]) \
            + int(fields[12])
    return result


def cpu_ticks(pid, children=False):
    """User + system CPU of a process (all its threads; with `children`,
    plus its reaped children's), in ticks; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def postgres_ticks(data_dir):
    """CPU of PostgreSQL so far, per process: the postmaster counts the
    processes it has reaped (a backend or autovacuum worker that ended)."""
    pids = postgres_pids(data_dir)
    ticks = {pid: cpu_ticks(pid, children=(pid == pids[0])) for pid in pids}
    return {pid: t for pid, t in ticks.items() if t is not None}


def ticks_since(before, after):
    """CPU used between two `postgres_ticks`: a process that started in
    between counts from 0; one that ended is in its parent's reaped CPU."""
    return sum(t - before.get(pid, 0) for pid, t in after.items())


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_load(argv, cpus, env=None):
    """Runs a load generator on `cpus`; its RESULT line as numbers (a run
    with errors exits 1 but still reports them)."""
    done = subprocess.run(
        ["taskset", "-c", ",".join(map(str, cpus))] + argv, env=env,
        capture_output=True, text=True)
    line = next((l for l in done.stdout.splitlines()
                 if l.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"{os.path.basename(argv[0])} failed "
                           f"({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-500:]}")
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return {k: float(v) for k, v in fields.items()}


def wrk(port, args, connections, cpus, duration=None):
    """wrk with the mixed workload of bench/mixed.lua against
    127.0.0.1:port (over args.users users)."""
    env = dict(os.environ, USERS=str(args.users))
    return run_load(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration or args.duration}s",
         "--timeout", "2s", "-s", os.path.join(ROOT, "bench", "mixed.lua"),
         f"http://127.0.0.1:{port}"],
        cpus, env=env)


def errors(r):
    return int(r["connect_errors"] + r["read_errors"] + r["write_errors"]
               + r["status_errors"] + r["timeouts"])



def start_postgres():
    """A PostgreSQL of its own (scripts/test-postgres, fsync on): returns
    (state directory, base DSN, data directory)."""
    state = tempfile.mkdtemp(prefix="vs-bench-")
    subprocess.run([os.path.join(ROOT, "scripts", "test-postgres"), "start",
                    state], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, VIDEOSTREAMS_PG_FSYNC="on"))
    with open(os.path.join(state, "dsn")) as f:
        base = f.read().strip()
    with open(os.path.join(state, "server_dir")) as f:
        data = os.path.join(f.read().strip(), "data")
    return state, base, data


def stop_postgres(state):
    subprocess.run([os.path.join(ROOT, "scripts", "test-postgres"), "stop",
                    state], stdout=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", state])


def migrated_database(base, name):
    """Creates database `name` on the server of DSN `base`, migrates it and
    returns its DSN."""
    subprocess.run(["psql", "-X", "-q", base, "-c", f"CREATE DATABASE {name}"],
                   check=True)
    dsn = base.replace("dbname=postgres", f"dbname={name}")
    subprocess.run([os.path.join(BUILD, "videostreams"), "db", "migrate",
                    f"--database-url={dsn}"], check=True,
                   stdout=subprocess.DEVNULL)
    return dsn
