"""What bench/chaos checks, from its log alone: the model of which streams
may be open when, and the four checks (bench/README.md, "Chaos").

A log is one JSON object per line:
  {"ev": "config", "t0", "ttl", "legacy_ttl", "limit", "users", "fault"}
  {"ev": "fault", "kind", "t", ...}             what the harness did, when
  {"ev": "reload", "r0", "r1", "users", "writer"}
      a window in which a node may have loaded users' state from the
      database (a restart, a takeover, a hand-back): at r0 the node that
      wrote those users' changes ("writer") died or stopped, by r1 every
      shard was served again
  {"ev": "db", "stage", "mem1", "db", "mem2"}   check 4's readings
  a request: {"i", "th", "op", "u", "sid", "node", "ts", "ta", "ws", "wa",
              "st", "err", "n", "allowed", "msg", "lst"}
      op: post | hb | del | list (v2), lstart | lend (legacy);
      ts/ta: monotonic send and answer time (s); ws/wa: the same, wall
      clock; st: HTTP status (0 when none); err: "connect" (nothing sent),
      "io" (sent, no answer); n: streamCount; lst: the sessions listed
      ([sessionId or null, startedAt ms]) of a list or a 409.
"""
import bisect
import collections
import json

EPS = 0.05           # a lease's end may trail its decision + TTL by this
MARGIN = 0.3         # a lease surely runs at least its TTL minus this
SLACK = 1.0          # the README: an expired lease stops counting within 1 s
EXPIRY_WRITE = 2.0   # an expired lease's close is queued within this
MATCH_MS = 3         # a legacy stream's startedAt vs its request's wall times


def load(path):
    records, events = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            (events if "ev" in d else records).append(d)
    return records, events


def granted(r):
    """True: acknowledged; False: refused (nothing opened); None: maybe."""
    if r["op"] == "post":
        if r["st"] in (200, 201):
            return True
        if r["err"] == "connect" or 400 <= r["st"] < 500:
            return False
        return None
    if r["st"] == 200:
        return bool(r.get("allowed"))
    if r["err"] == "connect" or 400 <= r["st"] < 500:
        return False
    return None


def unanswered(r):
    """Sent, but no definite answer: may or may not have taken effect."""
    return r["err"] == "io" or r["st"] >= 500


class Life:
    """One stretch in which a stream may be open: from `start` until
    `end` (a close or absence seen) or `lease_end` (its lease's latest end).
    `done`: by then the event that opened it is over (its answer, or the
    reload's end), so a later absence means it is not open."""
    __slots__ = ("start", "done", "lease_end", "end", "kind", "revived",
                 "removed", "end_sent", "floor")

    def __init__(self, start, done, lease_end, revived=None):
        self.start, self.done, self.lease_end = start, done, lease_end
        self.end, self.kind, self.revived, self.removed = None, None, revived, False
        # When the request that ended it was sent; the earliest end of its
        # lease after a reload gave it a fresh TTL.
        self.end_sent, self.floor = None, 0.0

    def active(self, t):
        return (not self.removed and self.end is None and self.lease_end > t)

    def final(self):
        return self.end if self.end is not None else self.lease_end


class Cand:
    """A stream that a grant request may have opened."""
    def __init__(self, r, ttl):
        self.r = r
        self.key = r["sid"] if r["op"] == "post" else f"L{r['i']}"
        self.legacy = r["op"] == "lstart"
        self.user = r["u"]
        self.acked = granted(r) is True
        self.ttl = ttl
        self.lives = []

    def last(self):
        return self.lives[-1] if self.lives else None

    # A load (a restart, a take-over, a hand-back) gives a v2 session a
    # fresh TTL, while a startstream stream keeps its stored expiry (its
    # start, between its request's send and answer, + TTL): docs/api.md's
    # promise 3, persistence/stream_store.cpp's `user_records`.
    def reloaded_latest_end(self, r1):
        """Its lease's latest end after a load that ended at `r1`."""
        if self.legacy:
            return self.r["ta"] + self.ttl + EPS
        return r1 + self.ttl + EPS

    def reloaded_earliest_end(self, r0):
        """Its lease's earliest end after a load that began at `r0`."""
        if self.legacy:
            return self.r["ts"] + self.ttl - MARGIN
        return r0 + self.ttl - MARGIN

    def matches(self, started_ms):
        r = self.r
        return (r["ws"] * 1000 - MATCH_MS <= started_ms
                <= r["wa"] * 1000 + MATCH_MS)

    def describe(self, t0):
        r = self.r
        what = ("acked" if self.acked else
                f"maybe ({r['st'] or r['err']})")
        spans = ", ".join(f"{l.start - t0:.3f}-{l.final() - t0:.3f}"
                          + (" revived" if l.revived else "")
                          for l in self.lives if not l.removed)
        return (f"{'legacy' if self.legacy else 'session'} {self.key} "
                f"(request {r['i']} sent {r['ts'] - t0:.3f} answered "
                f"{r['ta'] - t0:.3f}, {what}; may be open {spans})")


# endstream's answers when the user has no startstream stream open: the
# original's 400s (docs/api.md), and this service's 200 before issue #13.
NO_LEGACY_MSGS = ("no active streams to close for user",
                  "user_id not present in the database")


def no_legacy_answer(r):
    """True when an endstream answer says no startstream stream was open."""
    return ((r["st"] == 400 and r.get("msg") in NO_LEGACY_MSGS)
            or (r["st"] == 200 and r.get("msg") == "no open stream"))


class Obs:
    """What one answer showed about a user's streams at some moment
    within [ts, ta]."""
    def __init__(self, r, present_sids=None, absent_sids=None, legacy=None,
                 no_legacy=False, count=None):
        self.r = r
        self.ts, self.ta = r["ts"], r["ta"]
        self.present = present_sids or set()
        self.absent = absent_sids  # None: all sessions not present are absent
        self.legacy = legacy        # startedAt ms of the legacy streams listed
        self.no_legacy = no_legacy  # "no open stream": no legacy stream open
        self.count = count


def observations(recs):
    """Per user, what each answer showed."""
    obs = collections.defaultdict(list)
    for r in recs:
        op, st, u = r["op"], r["st"], r["u"]
        if r.get("lst") is not None and st in (200, 409):
            sids = {s for s, _ in r["lst"] if s is not None}
            legacy = [ms for s, ms in r["lst"] if s is None]
            o = Obs(r, present_sids=sids, legacy=legacy,
                    count=r.get("n"))
            o.full = True
            obs[u].append(o)
        elif op in ("hb", "del") and st in (404, 410):
            o = Obs(r, absent_sids={r["sid"]})
            o.full = False
            obs[u].append(o)
        elif op in ("hb", "del") and st == 200:
            o = Obs(r, present_sids={r["sid"]}, count=r.get("n"))
            o.full = False
            obs[u].append(o)
        elif op == "lend" and no_legacy_answer(r):
            o = Obs(r, no_legacy=True, count=r.get("n"))
            o.full = False
            obs[u].append(o)
    return obs


def shows_absent(o, c):
    """True when observation `o` shows candidate `c` not open."""
    if c.legacy:
        if o.no_legacy:
            return True
        return o.full and not any(c.matches(ms) for ms in o.legacy)
    if o.full:
        return c.key not in o.present
    return o.absent is not None and c.key in o.absent


def analyse(path):
    """Runs the four checks on one phase's log; returns a dict."""
    recs, events = load(path)
    cfg = next(e for e in events if e["ev"] == "config")
    t0, limit = cfg["t0"], cfg["limit"]
    ttl, lttl = cfg["ttl"], cfg["legacy_ttl"]
    recs.sort(key=lambda r: (r["ts"], r["i"]))
    reloads = sorted((e for e in events if e["ev"] == "reload"),
                     key=lambda e: e["r0"])
    for w in reloads:
        w["users"] = set(w["users"])
        w["writer"] = set(w["writer"])
        # Acknowledged grants of the writer's users answered before r0:
        # every change that writer queued before one was sent is committed
        # (one writer, batches in order; a failed batch is retried under
        # the later changes).
        w["barrier"] = max((r["ts"] for r in recs
                            if r["op"] in ("post", "lstart")
                            and granted(r) is True and r["u"] in w["writer"]
                            and r["ta"] <= w["r0"]), default=float("-inf"))

    by_user = collections.defaultdict(list)
    for r in recs:
        by_user[r["u"]].append(r)
    cands = collections.defaultdict(list)
    for r in recs:
        if r["op"] in ("post", "lstart") and granted(r) is not False:
            cands[r["u"]].append(Cand(r, lttl if r["op"] == "lstart" else ttl))
    obs = observations(recs)
    by_sid = {}
    for u, cs in cands.items():
        for c in cs:
            if not c.legacy:
                by_sid[c.key] = c

    problems = {1: [], 2: [], 3: [], 4: []}

    def fmt(t):
        return f"{t - t0:.3f}"

    # ---- the model: the lives of every candidate, user by user ----
    for u in sorted(set(cands) | set(obs)):
        cs = cands.get(u, [])
        os_ = sorted(obs.get(u, []), key=lambda o: o.ta)
        wins = [w for w in reloads if u in w["users"]]
        evs = []  # (time, order, kind, payload)
        for c in cs:
            evs.append((c.r["ts"], 0, "create", c))
        for r in by_user.get(u, []):
            if r["op"] == "hb" and (r["st"] == 200 or unanswered(r)):
                evs.append((r["ta"], 1, "renew", r))
            elif r["op"] == "del" and r["st"] == 200:
                evs.append((r["ta"], 2, "close", r))
            elif (r["op"] == "lend" and r["st"] == 200
                  and r.get("msg") == "stream closed"):
                evs.append((r["ta"], 2, "lclose", r))
        for o in os_:
            evs.append((o.ta, 3, "absent", o))
        for w in wins:
            evs.append((w["r0"], 4, "reload", w))
        evs.sort(key=lambda e: (e[0], e[1]))

        def refresh_end(c, t):
            end = 0.0
            for w in wins:
                if w["r0"] <= t <= w["r1"]:
                    end = max(end, c.reloaded_latest_end(w["r1"]))
            return end

        live = set()  # candidates whose last life has not ended (yet)
        for t, _, kind, x in evs:
            if kind == "create":
                c, r = x, x.r
                life = Life(r["ts"], r["ta"],
                            max(r["ta"] + c.ttl + EPS, refresh_end(c, r["ts"])))
                c.lives.append(life)
                live.add(c)
                if not c.acked:
                    # A grant answered 503 (or not at all) was undone before
                    # its answer, or stays open until its lease ends (nothing
                    # else closes it but a reload that loses it). So a list
                    # that shows it gone before its lease could end shows it
                    # was never open after its answer, or only until a node
                    # that held it died.
                    for o in os_:
                        if (o.ts >= r["ta"]
                                and o.ta < r["ts"] + c.ttl - MARGIN
                                and shows_absent(o, c)):
                            lost_at = [w["r0"] for w in wins
                                       if r["ta"] < w["r0"] <= o.ta]
                            life.end = max([r["ta"]] + lost_at)
                            life.kind = "undone"
                            life.end_sent = life.end
                            break
            elif kind == "renew":
                c = by_sid.get(x["sid"])
                if c and c.last() and c.last().active(x["ts"]):
                    l = c.last()
                    l.lease_end = max(l.lease_end, x["ta"] + c.ttl + EPS)
            elif kind == "close":
                c = by_sid.get(x["sid"])
                if c and c.last() and c.last().active(x["ts"]):
                    l = c.last()
                    l.end, l.kind = min(l.lease_end, x["ta"]), "close"
                    l.end_sent = x["ts"]
            elif kind == "lclose":
                # endstream closes the oldest legacy stream open when it is
                # decided, somewhere within its request: give the close to
                # the oldest that may be open then (if that one was not, the
                # stream really closed stays counted here: an over-count,
                # never an under-count).
                open_ = [c for c in cs if c.legacy and c.last()
                         and not c.last().removed
                         and c.last().start < x["ta"]
                         and c.last().final() > x["ts"]]
                if open_:
                    l = min(open_, key=lambda c: c.r["ts"]).last()
                    if l.end is None or x["ta"] < l.end:
                        l.end, l.kind = min(l.lease_end, x["ta"]), "close"
                    l.end_sent = min(x["ts"], l.end_sent if l.end_sent
                                     is not None else x["ts"])
                else:
                    problems[1].append(
                        f"user {u}: request {x['i']} (endstream, sent "
                        f"{fmt(x['ts'])}) closed a legacy stream where none "
                        "can be open")
            elif kind == "absent":
                o = x
                for c in list(live):
                    l = c.last()
                    if l.removed or l.end is not None or l.lease_end < t - 60:
                        live.discard(c)
                        continue
                    if not l.active(o.ts) or o.ts < l.done:
                        continue
                    if not shows_absent(o, c):
                        continue
                    if (l.revived and o.ts >= l.revived[1]
                            and o.ta < c.reloaded_earliest_end(
                                l.revived[0])):
                        l.removed = True  # it was not loaded after all
                    else:
                        l.end, l.kind = min(l.lease_end, o.ta), "absent"
                        l.end_sent = o.ts
            elif kind == "reload":
                w = x
                for c in cs:
                    l = c.last()
                    if not l or c.r["ts"] >= w["r0"]:
                        continue
                    if l.active(w["r0"]):
                        # Loaded again: a fresh TTL (a v2 session).
                        l.lease_end = max(l.lease_end,
                                          c.reloaded_latest_end(w["r1"]))
                        l.floor = max(l.floor,
                                      c.reloaded_earliest_end(w["r0"]))
                        continue
                    if l.removed:
                        removed_at = l.done
                    elif l.end is not None:
                        removed_at = l.end
                    else:
                        removed_at = l.lease_end + EXPIRY_WRITE
                    if (removed_at > w["barrier"]
                            and c.reloaded_latest_end(w["r1"]) > w["r0"]):
                        # Its close may not have been committed: the load
                        # may bring it back (a v2 session with a fresh
                        # TTL, a legacy stream until its stored expiry).
                        c.lives.append(Life(w["r0"], w["r1"],
                                            c.reloaded_latest_end(w["r1"]),
                                            revived=(w["r0"], w["r1"])))
                        live.add(c)

    # Requests that may end a stream, by when they were sent.
    hb_ok = collections.defaultdict(list)
    del_sent = collections.defaultdict(list)
    lend_sent = collections.defaultdict(list)
    for r in recs:
        if r["op"] == "hb" and r["st"] == 200:
            hb_ok[r["sid"]].append(r["ts"])
        elif r["op"] == "del" and r["err"] != "connect":
            del_sent[r["sid"]].append(r["ts"])
        elif r["op"] == "lend" and r["err"] != "connect" and not (
                no_legacy_answer(r)):
            lend_sent[r["u"]].append(r["ts"])
    for v in list(del_sent.values()) + list(lend_sent.values()):
        v.sort()

    def first_close(c, after):
        """When the first request that may close `c` after `after` was
        sent (a DELETE of its session; for a legacy stream any endstream
        of its user)."""
        sent = lend_sent.get(c.user, []) if c.legacy else del_sent.get(
            c.key, [])
        j = bisect.bisect_left(sent, after)
        return sent[j] if j < len(sent) else float("inf")

    def surely_hi(c):
        """An acknowledged grant: until when it is surely open (without
        reloads)."""
        r = c.r
        renewed = max([r["ts"]] + hb_ok.get(c.key, [])) if not c.legacy \
            else r["ts"]
        return min(renewed + c.ttl - MARGIN, first_close(c, r["ta"]))

    def open_if_any(c, l):
        """Where life `l` of `c` is open, if it happened at all: from the
        answer that opened it (or the reload's end) until the first request
        that may end it was sent or its lease's earliest end."""
        if l.removed:
            return None
        if l.revived:
            lo = l.revived[1]
            hi = c.reloaded_earliest_end(l.revived[0])
        elif c.acked:
            lo = c.r["ta"]
            hi = max([c.r["ts"]] + hb_ok.get(c.key, [])) + c.ttl - MARGIN \
                if not c.legacy else c.r["ts"] + c.ttl - MARGIN
        else:
            lo = c.r["ta"]
            hi = c.r["ts"] + c.ttl - MARGIN
        hi = min(max(hi, l.floor), first_close(c, lo))
        if l.end_sent is not None:
            hi = min(hi, l.end_sent)
        return (lo, hi) if hi > lo else None

    def sweep(spans):
        """(times, counts): the number of spans open from each time on."""
        pts = sorted([(lo, 1) for lo, _ in spans]
                     + [(hi, -1) for _, hi in spans], key=lambda p: (p[0], -p[1]))
        times, values, n = [], [], 0
        for t, d in pts:
            n += d
            if times and times[-1] == t:
                values[-1] = n
            else:
                times.append(t)
                values.append(n)
        return times, values

    def window(step, ts, ta, pick):
        times, values = step
        i = bisect.bisect_right(times, ts) - 1
        j = bisect.bisect_right(times, ta)
        return pick([values[i] if i >= 0 else 0] + values[max(i, 0):j])

    # ---- check 1: never over the limit ----
    max_count = 0       # the most streams open at once (if they exist)
    max_possible = 0    # the same, every stream from its send (widest)
    max_reported = 0
    widest = {}
    above = collections.defaultdict(list)
    for u, cs in cands.items():
        spans = []
        for c in cs:
            for l in c.lives:
                span = open_if_any(c, l)
                if span:
                    spans.append((span[0], span[1], c))
        points = sorted([(lo, 0, +1, c) for lo, _, c in spans]
                        + [(hi, 1, -1, c) for _, hi, c in spans],
                        key=lambda p: (p[0], -p[2]))
        openset = set()
        reported = 0
        for t, _, d, c in points:
            if d > 0:
                openset.add(c)
                if len(openset) > limit and reported < 3:
                    reported += 1
                    problems[1].append(
                        f"user {u}: {len(openset)} streams open at "
                        f"{fmt(t)}: " + "; ".join(
                            x.describe(t0) for x in sorted(
                                openset, key=lambda x: x.r["ts"])))
            else:
                openset.discard(c)
            max_count = max(max_count, len(openset))
        widest[u] = sweep([(l.start, l.final()) for c in cs for l in c.lives
                           if not l.removed and l.final() > l.start])
        max_possible = max([max_possible] + widest[u][1])
    # What the service reported: never above the limit, never more
    # streams than may be open.
    for r in recs:
        if r["st"] not in (200, 201, 409):
            continue
        n = r.get("n")
        if n is None and r.get("lst") is not None:
            n = len(r["lst"])
        if n is None:
            continue
        max_reported = max(max_reported, n)
        if n > limit:
            problems[1].append(
                f"user {r['u']}: request {r['i']} ({r['op']}, sent "
                f"{fmt(r['ts'])}) answered streamCount {n} > {limit}")
        most = window(widest.get(r["u"], ([], [])), r["ts"], r["ta"], max)
        if n > most:
            above[r["u"]].append((r, n, most))
    for u, xs in sorted(above.items()):
        r, n, most = xs[0]
        problems[1].append(
            f"user {u}: {len(xs)} answers counted more streams than may be "
            f"open, the first request {r['i']} ({r['op']}, sent "
            f"{fmt(r['ts'])}): streamCount {n}, at most {most}")

    def covered(c, ts, ta):
        return any(not l.removed and l.start <= ta and l.final() + SLACK >= ts
                   for l in c.lives)

    # Wall clock to monotonic, for legacy streams' startedAt.
    wall_offset = min((r["ws"] - r["ts"] for r in recs), default=0.0)
    seen_503 = set()
    reported_ms = set()
    for u, os_ in obs.items():
        cs = cands.get(u, [])
        for o in os_:
            for sid in o.present:
                c = by_sid.get(sid)
                if c is None:
                    problems[1].append(
                        f"user {u}: session {sid} listed at {fmt(o.ts)}-"
                        f"{fmt(o.ta)} (request {o.r['i']}), never asked for")
                    continue
                if not c.acked and o.ts > c.r["ta"]:
                    seen_503.add(c.key)
                if not covered(c, o.ts, o.ta):
                    problems[3 if not c.acked else 1].append(
                        f"user {u}: seen open at {fmt(o.ts)}-{fmt(o.ta)} "
                        f"(request {o.r['i']} {o.r['op']}) where it cannot "
                        f"be: {c.describe(t0)}")
            for ms in (o.legacy or []):
                if (u, ms) in reported_ms:
                    continue
                ms_c = [c for c in cs if c.legacy and c.matches(ms)]
                for c in ms_c:
                    if not c.acked and o.ts > c.r["ta"]:
                        seen_503.add(c.key)
                if not any(covered(c, o.ts, o.ta) for c in ms_c):
                    which = 3 if ms_c and not any(c.acked for c in ms_c) else 1
                    started = ms / 1000 - wall_offset
                    if ms_c:
                        why = "; ".join(c.describe(t0) for c in ms_c)
                    else:
                        # Started while no grant request of this user was
                        # in flight: decided after its request's answer.
                        suspects = [c for c in cs if c.legacy
                                    and not c.acked
                                    and c.r["ts"] < started]
                        why = ("started while no startstream of the user "
                               "was in flight (decided after its request "
                               "was answered?); grants of the user answered "
                               "503 before: " + ("; ".join(
                                   c.describe(t0) for c in suspects)
                                   or "none"))
                        if suspects:
                            which = 3
                    reported_ms.add((u, ms))
                    problems[which].append(
                        f"user {u}: a legacy stream started at "
                        f"{fmt(started)} (startedAt {ms}) listed first at "
                        f"{fmt(o.ts)}-{fmt(o.ta)} (request {o.r['i']}) "
                        f"where none can be open: {why}")

    # ---- check 2: no acknowledged grant lost ----
    # Each acknowledged grant is surely open from its answer until its
    # lease's earliest end (its last acknowledged renewal's send + TTL) or
    # the send of anything that may close it, whichever comes first.
    surely = collections.defaultdict(list)  # user -> [(lo, hi, cand)]
    for u, cs in cands.items():
        for c in cs:
            if not c.acked:
                continue
            lo, hi = c.r["ta"], surely_hi(c)
            if hi > lo:
                surely[u].append((lo, hi, c))
    acked_total = sum(1 for cs in cands.values() for c in cs if c.acked)
    lost = set()
    checked = 0
    for u, os_ in obs.items():
        spans = sorted(surely.get(u, []), key=lambda x: x[0])
        los = [x[0] for x in spans]
        for o in os_:
            j = bisect.bisect_right(los, o.ts)
            i = bisect.bisect_left(los, o.ts - 120)
            for lo, hi, c in spans[i:j]:
                if not (lo <= o.ts and o.ta <= hi):
                    continue
                checked += 1
                if shows_absent(o, c):
                    lost.add(c.key)
                    problems[2].append(
                        f"user {u}: not open at {fmt(o.ts)}-{fmt(o.ta)} "
                        f"(request {o.r['i']} {o.r['op']} {o.r['st']}) though "
                        f"surely open then: {c.describe(t0)}")
    # Counts: an answer's streamCount is at least the streams surely open.
    steps = {u: sweep([(lo, hi) for lo, hi, _ in spans])
             for u, spans in surely.items()}
    for r in recs:
        if r.get("n") is None or r["st"] not in (200, 201, 409):
            continue
        if r["u"] not in steps:
            continue
        least = window(steps[r["u"]], r["ts"], r["ta"], min)
        own = 1 if ((r["op"] == "post" and r["st"] == 201)
                    or (r["op"] == "lstart" and r.get("allowed"))) else 0
        if r["n"] < least + own:
            problems[2].append(
                f"user {r['u']}: request {r['i']} ({r['op']}, sent "
                f"{fmt(r['ts'])}) answered streamCount {r['n']}, but "
                f"{least} streams were surely open"
                + (" besides the one it granted" if own else ""))

    # ---- check 3: every grant answered 503 gone within its lease ----
    maybe = [c for cs in cands.values() for c in cs if not c.acked]
    late = sum(1 for p in problems[3])

    # ---- check 4: the database equal to memory ----
    db_users = 0
    for e in events:
        if e["ev"] != "db":
            continue
        for u in sorted(set(e["mem1"]) | set(e["mem2"]) | set(e["db"]),
                        key=int):
            m1 = collections.Counter(map(tuple, e["mem1"].get(u, [])))
            m2 = collections.Counter(map(tuple, e["mem2"].get(u, [])))
            d = collections.Counter(map(tuple, e["db"].get(u, [])))
            both, either = m1 & m2, m1 | m2
            db_users += 1
            missing = both - d
            extra = d - either
            if missing or extra:
                problems[4].append(
                    f"{e['stage']}: user {u}: memory {sorted(both.elements())}"
                    f", database {sorted(d.elements())}")
        if e.get("error"):
            problems[4].append(f"{e['stage']}: {e['error']}")

    grant_recs = [r for r in recs if r["op"] in ("post", "lstart")]
    return {
        "fault": cfg["fault"],
        "faults": sum(1 for e in events if e["ev"] == "fault"
                      and e.get("kind") in ("kill -9", "SIGSTOP",
                                            "pg_ctl -m immediate stop",
                                            "SIGSTOP PostgreSQL")),
        "unplanned": sum(1 for e in reloads if e.get("unplanned")),
        "requests": len(recs),
        "grants": sum(1 for r in grant_recs if granted(r) is True),
        "unavailable": sum(1 for r in grant_recs if granted(r) is None),
        "max_count": max_count,
        "max_possible": max_possible,
        "max_reported": max_reported,
        "limit": limit,
        "acked": acked_total,
        "checked": checked,
        "lost": len(lost),
        "maybe": len(maybe),
        "seen_503": len(seen_503),
        "late": late,
        "db_users": db_users,
        "db_readings": sum(1 for e in events if e["ev"] == "db"),
        "problems": problems,
    }
