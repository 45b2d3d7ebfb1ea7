#!/usr/bin/env python3
"""Runs every command of README.md's API examples against a real process.

The examples are the ```sh blocks of the section "## The API" (its
subsections included). Each `curl` line there ends with its answer as a
comment: `# STATUS` and, if the answer has a body, the body. In a body,
`<anything>` stands for the text of a JSON string that changes from run to
run (an id, a time, advice) and `...` for any text at all. Other lines may
only set shell variables (`B=...`); `$TOKEN` is the admin token the process
is started with. Every block runs in order, in one bash, against one fresh
in-memory process (`--admin-token`), with `localhost:8080` pointing at it.

A curl line without an answer, a line that is neither, a status or a body
that differs: the test fails and says which line.

  readme_examples.py --binary build/videostreams --readme README.md
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "readme-example-token"
CURL = re.compile(r"^(curl\s.*?)\s+#\s+(\d{3})(?:\s+(.*))?$")
ASSIGNMENT = re.compile(r"^(export\s+)?[A-Za-z_][A-Za-z0-9_]*=\S*$")


def api_blocks(text):
    """The ```sh blocks of the section '## The API', with line numbers."""
    lines = text.split("\n")
    blocks, in_section, block = [], False, None
    for n, line in enumerate(lines, 1):
        if line.startswith("## "):
            in_section = line.strip() == "## The API"
        if not in_section:
            continue
        if block is None and line.strip() == "```sh":
            block = []
        elif block is not None and line.strip() == "```":
            blocks.append(block)
            block = None
        elif block is not None:
            block.append((n, line))
    return blocks


def pattern(expected):
    """A regex for an answer as the README shows it."""
    out, i = "", 0
    for m in re.finditer(r"<[^>]*>|\.\.\.", expected):
        out += re.escape(expected[i:m.start()])
        out += '[^"]*' if m.group(0).startswith("<") else ".*"
        i = m.end()
    return re.compile(out + re.escape(expected[i:]), re.S)


def start(binary):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOSTREAMS_")
           and k != "DATABASE_URL"}
    p = subprocess.Popen([binary, "--port=0", "--bind=127.0.0.1", "--ops-port=-1",
                          f"--admin-token={TOKEN}"], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, env=env, text=True)
    deadline = time.monotonic() + 30
    seen = ""
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        seen += line
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                        return p, port
                except Exception:
                    time.sleep(0.02)
    p.kill()
    sys.exit(f"the service did not start:\n{seen}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--readme", required=True)
    args = ap.parse_args()
    with open(args.readme, encoding="utf-8") as f:
        blocks = api_blocks(f.read())
    checks, script, failures = [], ["set -u"], []
    with tempfile.TemporaryDirectory() as out:
        for block in blocks:
            for n, line in block:
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                m = CURL.match(text)
                if m:
                    k = len(checks)
                    checks.append((n, text, m.group(2), (m.group(3) or "").strip()))
                    cmd = m.group(1).replace("localhost:8080", "127.0.0.1:$PORT")
                    cmd = cmd.replace("curl ", f"curl -s -o {out}/{k}.body -w '%{{http_code}}' ", 1)
                    script.append(f"{cmd} > {out}/{k}.status || echo 'curl failed' > {out}/{k}.status")
                elif ASSIGNMENT.match(text):
                    script.append(text.replace("localhost:8080", "127.0.0.1:$PORT"))
                elif text.startswith("curl"):
                    failures.append(f"README.md:{n}: a curl line without its answer (# STATUS BODY): {text}")
                else:
                    failures.append(f"README.md:{n}: neither a curl example nor a variable: {text}")
        if not checks:
            failures.append("no curl examples found in '## The API': has the section moved?")
        proc, port = start(args.binary)
        try:
            env = dict(os.environ, PORT=str(port), TOKEN=TOKEN)
            subprocess.run(["bash", "-c", "\n".join(script)], env=env, check=False, timeout=120)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        for k, (n, text, status, body) in enumerate(checks):
            try:
                got_status = open(f"{out}/{k}.status").read().strip()
                got_body = open(f"{out}/{k}.body").read().strip() if os.path.exists(f"{out}/{k}.body") else ""
            except OSError as e:
                failures.append(f"README.md:{n}: not run ({e}): {text}")
                continue
            if got_status != status or not pattern(body).fullmatch(got_body):
                failures.append(f"README.md:{n}: {text}\n  README shows: {status} {body}\n"
                                f"  the service:  {got_status} {got_body}")
    print(f"{len(checks)} README examples run, {len(failures)} failures")
    for f in failures:
        print(f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
