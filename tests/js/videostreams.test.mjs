// The browser client (clients/js/videostreams.js) against a real service
// process: the binary from VIDEOSTREAMS_BIN, else build/videostreams, in
// memory on a port the kernel picks. Time is injected (a manual timer
// queue), never slept on; fetch is wrapped where a test needs a lost answer
// or a 503.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { StreamSession, retryDelay, newSessionId } from "../../clients/js/videostreams.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const binary = process.env.VIDEOSTREAMS_BIN || path.join(root, "build", "videostreams");

let service;
let base;

/** Starts the binary and resolves once it printed its start line. */
function startService(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ["--port=0", "--bind=127.0.0.1", "--ops-port=-1", ...args], {
      stdio: ["ignore", "ignore", "pipe"],
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("VIDEOSTREAMS_"))),
    });
    let text = "";
    const timer = setTimeout(() => reject(new Error(`no start line within 30 s:\n${text}`)), 30000);
    child.stderr.on("data", (chunk) => {
      text += chunk;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]) });
      }
    });
    child.on("exit", (code) => reject(new Error(`exited ${code}:\n${text}`)));
    child.on("error", reject);
  });
}

before(async () => {
  service = await startService(["--max-streams=2", "--min-ttl=1"]);
  base = `http://127.0.0.1:${service.port}`;
  // Wait until it answers for users (readyz 200).
  for (let i = 0; i < 3000; i++) {
    try {
      if ((await fetch(`${base}/readyz`)).status === 200) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("never ready");
});

after(() => {
  service?.child.kill("SIGTERM");
});

/** A timer queue the test runs by hand: nothing fires by itself. */
function manualTimers() {
  const q = new Map();
  let next = 1;
  return {
    setTimeout: (fn, ms) => {
      const id = next++;
      q.set(id, { fn, ms });
      return id;
    },
    clearTimeout: (id) => q.delete(id),
    pending: () => [...q.values()].map((t) => t.ms),
    /** Fires the earliest-due timer and waits for what it started. */
    async fire() {
      const [id, t] = [...q.entries()].sort((a, b) => a[1].ms - b[1].ms)[0] ?? [];
      assert.ok(t, "a timer is pending");
      q.delete(id);
      await t.fn();
    },
  };
}

/** The user's sessions as the service lists them. */
async function listed(user) {
  const r = await fetch(`${base}/api/v2/users/${user}/streams`);
  assert.equal(r.status, 200);
  return r.json();
}

function collect(session) {
  const seen = [];
  for (const type of ["open", "heartbeat", "limit", "ended", "retry", "error"])
    session.addEventListener(type, (e) => seen.push({ type, detail: e.detail }));
  return seen;
}

test("opens a session, heartbeats at the advised interval, stops with a DELETE", async () => {
  const timers = manualTimers();
  const s = new StreamSession({ baseUrl: base, userId: 501, ttlSeconds: 30, ...timers, document: null, window: null });
  const seen = collect(s);
  const r = await s.start();
  assert.equal(r.ok, true);
  assert.equal(r.status, 201);
  assert.equal(r.sessionId, s.sessionId);
  assert.equal(r.heartbeatIntervalSeconds, 10);
  assert.deepEqual(timers.pending(), [10000]);
  await timers.fire();
  assert.equal(seen.filter((e) => e.type === "heartbeat").length, 1);
  assert.deepEqual(timers.pending(), [10000]);
  assert.equal((await listed(501)).streamCount, 1);
  assert.equal(await s.stop(), true);
  assert.equal(s.state, "stopped");
  assert.deepEqual(timers.pending(), []);
  assert.equal((await listed(501)).streamCount, 0);
});

test("a lost answer and a 503 are retried with the same sessionId: one session, never two", async () => {
  const timers = manualTimers();
  const bodies = [];
  let calls = 0;
  const flaky = async (url, init) => {
    calls++;
    if (init.body) bodies.push(JSON.parse(init.body));
    if (calls === 1) {
      // The request reaches the service, the answer is lost.
      await fetch(url, init);
      throw new TypeError("network error");
    }
    if (calls === 2) return new Response('{"msg":"Service Unavailable"}', { status: 503, headers: { "Retry-After": "2" } });
    return fetch(url, init);
  };
  const s = new StreamSession({ baseUrl: base, userId: 502, fetch: flaky, random: () => 0.5, ...timers, document: null, window: null });
  const seen = collect(s);
  const started = s.start();
  // Each retry waits on a timer: fire them by hand.
  for (let i = 0; i < 2; i++) {
    while (timers.pending().length === 0) await new Promise((r) => setImmediate(r));
    await timers.fire();
  }
  const r = await started;
  assert.equal(r.ok, true);
  assert.equal(r.status, 200, "the retry renewed the session the lost answer had opened");
  const retries = seen.filter((e) => e.type === "retry").map((e) => e.detail);
  assert.equal(retries.length, 2);
  assert.equal(retries[0].status, null);
  assert.equal(retries[1].status, 503);
  assert.equal(retries[1].delayMs, 2000 + 500, "Retry-After 2 s plus jitter (half of it times random 0.5)");
  assert.ok(bodies.every((b) => b.sessionId === s.sessionId));
  const l = await listed(502);
  assert.equal(l.streamCount, 1);
  assert.equal(l.sessions[0].sessionId, s.sessionId);
  await s.stop();
});

test("409 surfaces the session list; a replace takes a slot, and the replaced player gets 410", async () => {
  const timersA = manualTimers();
  const a = new StreamSession({ baseUrl: base, userId: 503, sessionId: "tv", ...timersA, document: null, window: null });
  const b = new StreamSession({ baseUrl: base, userId: 503, sessionId: "phone", ...manualTimers(), document: null, window: null });
  assert.equal((await a.start()).status, 201);
  assert.equal((await b.start()).status, 201);
  const c = new StreamSession({ baseUrl: base, userId: 503, sessionId: "laptop", ...manualTimers(), document: null, window: null });
  const seenC = collect(c);
  const full = await c.start();
  assert.equal(full.ok, false);
  assert.equal(full.limitReached, true);
  assert.equal(c.state, "limit");
  assert.deepEqual(full.sessions.map((x) => x.sessionId), ["tv", "phone"]);
  assert.equal(seenC.filter((e) => e.type === "limit").length, 1);
  // "Stop watching on the TV": one decision, never over the limit.
  const took = await c.start({ replaceSessionId: "tv" });
  assert.equal(took.status, 201);
  assert.equal(took.replacedSessionId, "tv");
  assert.equal(took.streamCount, 2);
  // The TV's next heartbeat learns why its stream stopped.
  const seenA = collect(a);
  await timersA.fire();
  const ended = seenA.find((e) => e.type === "ended");
  assert.ok(ended, "an ended event");
  assert.equal(ended.detail.reason, "ended-elsewhere");
  assert.equal(ended.detail.status, 410);
  assert.equal(ended.detail.message, "stream ended by another device");
  assert.match(ended.detail.detail, /POST \/api\/v2\/users\/503\/streams/);
  assert.equal(a.state, "ended");
  assert.deepEqual(timersA.pending(), [], "no more heartbeats");
  await b.stop();
  await c.stop();
});

test("kick() ends another device's session with a DELETE", async () => {
  const a = new StreamSession({ baseUrl: base, userId: 504, sessionId: "tv", ...manualTimers(), document: null, window: null });
  const b = new StreamSession({ baseUrl: base, userId: 504, sessionId: "phone", ...manualTimers(), document: null, window: null });
  await a.start();
  await b.start();
  const c = new StreamSession({ baseUrl: base, userId: 504, ...manualTimers(), document: null, window: null });
  assert.equal((await c.start()).limitReached, true);
  assert.equal(await c.kick("phone"), true);
  assert.equal(await c.kick("phone"), false);
  assert.equal((await c.start()).status, 201);
  assert.deepEqual((await listed(504)).sessions.map((x) => x.sessionId), ["tv", c.sessionId]);
  await a.stop();
  await c.stop();
});

test("pauses heartbeats while the page is hidden, beats at once when visible again", async () => {
  const timers = manualTimers();
  const document = new EventTarget();
  document.visibilityState = "visible";
  const s = new StreamSession({ baseUrl: base, userId: 505, ttlSeconds: 6, pauseWhenHidden: true, ...timers, document, window: null });
  const seen = collect(s);
  await s.start();
  assert.deepEqual(timers.pending(), [2000]);
  document.visibilityState = "hidden";
  document.dispatchEvent(new Event("visibilitychange"));
  assert.equal(s.state, "paused");
  assert.deepEqual(timers.pending(), []);
  document.visibilityState = "visible";
  document.dispatchEvent(new Event("visibilitychange"));
  // The listener started a heartbeat; wait for its answer.
  while (!seen.some((e) => e.type === "heartbeat")) await new Promise((r) => setImmediate(r));
  assert.equal(s.state, "playing");
  assert.deepEqual(timers.pending(), [2000]);
  await s.stop();
});

test("a heartbeat whose lease ran out opens the same session again", async () => {
  const timers = manualTimers();
  const s = new StreamSession({ baseUrl: base, userId: 506, ...timers, document: null, window: null });
  const seen = collect(s);
  await s.start();
  // As if its lease had run out (no sleeping here): the session id the
  // client holds is one the service does not know, so the heartbeat is a
  // 404, not a 410.
  s.sessionId = newSessionId();
  await timers.fire();
  assert.equal(seen.filter((e) => e.type === "open").length, 2, "opened again after the 404");
  assert.equal(s.state, "playing");
  const first = (await listed(506)).sessions.map((x) => x.sessionId);
  assert.equal(first.length, 2, "the first session, and the reopened one");
  assert.ok(first.includes(s.sessionId));
  await s.stop();
});

/** A fetch that holds each request of `method` until the test lets it go. */
function gatedFetch(method) {
  const gates = [];
  const sent = [];
  const gated = async (url, init) => {
    sent.push(init.method);
    if (init.method === method) await new Promise((go) => gates.push(go));
    return fetch(url, init);
  };
  return { fetch: gated, sent, release: () => gates.splice(0).forEach((go) => go()), held: () => gates.length };
}

test("stop() while the start's POST is in flight: the POST lands first, then its DELETE; nothing stays open", async () => {
  const gate = gatedFetch("POST");
  const s = new StreamSession({ baseUrl: base, userId: 508, fetch: gate.fetch, ...manualTimers(), document: null, window: null });
  const started = s.start();
  while (gate.held() === 0) await new Promise((r) => setImmediate(r));
  const stopping = s.stop();
  assert.equal(s.state, "stopped");
  gate.release();
  assert.deepEqual(await started, { ok: false, stopped: true });
  assert.equal(await stopping, true, "the DELETE closed what the POST opened");
  assert.deepEqual(gate.sent, ["POST", "DELETE"]);
  assert.equal((await listed(508)).streamCount, 0);
});

test("stop() while a renewing start() is in flight ends the open session", async () => {
  const held = gatedFetch("POST");
  const s = new StreamSession({ baseUrl: base, userId: 509, fetch: held.fetch, ...manualTimers(), document: null, window: null });
  const opened = s.start();
  while (held.held() === 0) await new Promise((r) => setImmediate(r));
  held.release();
  assert.equal((await opened).status, 201);
  assert.equal(s.state, "playing");
  const renewed = s.start();
  while (held.held() === 0) await new Promise((r) => setImmediate(r));
  const stopping = s.stop();
  held.release();
  assert.deepEqual(await renewed, { ok: false, stopped: true });
  assert.equal(await stopping, true);
  assert.equal((await listed(509)).streamCount, 0);
});

test("stop() during the back-off after a 503 ends the retries: nothing is sent after the DELETE, nothing stays open", async () => {
  const timers = manualTimers();
  const sent = [];
  const f = async (url, init) => {
    sent.push(init.method);
    if (init.method === "POST")
      return new Response('{"msg":"Service Unavailable"}', { status: 503, headers: { "Retry-After": "1" } });
    return fetch(url, init);
  };
  const s = new StreamSession({ baseUrl: base, userId: 510, fetch: f, random: () => 0, ...timers, document: null, window: null });
  const started = s.start();
  while (timers.pending().length === 0) await new Promise((r) => setImmediate(r));
  assert.deepEqual(timers.pending(), [1000], "waiting out Retry-After");
  assert.equal(await s.stop(), false, "a DELETE, answered 404: it never opened");
  assert.deepEqual(timers.pending(), [], "the back-off's timer is gone");
  assert.deepEqual(sent, ["POST", "DELETE"]);
  assert.deepEqual(await started, { ok: false, stopped: true });
  assert.equal((await listed(510)).streamCount, 0);
});

test("a start() whose tries ran out leaves the client idle and no longer listening to the page", async () => {
  const window = new EventTarget();
  const down = async () => {
    throw new TypeError("network error");
  };
  const timers = manualTimers();
  const s = new StreamSession({ baseUrl: base, userId: 511, fetch: down, maxAttempts: 2, ...timers, document: null, window });
  const seen = collect(s);
  const started = s.start();
  while (timers.pending().length === 0) await new Promise((r) => setImmediate(r));
  await timers.fire();
  await assert.rejects(started, /network error/);
  assert.equal(s.state, "idle");
  window.dispatchEvent(new Event("pagehide"));
  assert.equal(seen.filter((e) => e.type === "ended").length, 0, "pagehide is not listened to any more");
});

test("a heartbeat 404 whose reopen fails ends the stream (reason expired), with no more timers", async () => {
  const timers = manualTimers();
  let reachable = true;
  const f = async (url, init) => {
    if (!reachable && init.method === "POST") throw new TypeError("network error");
    return fetch(url, init);
  };
  const s = new StreamSession({ baseUrl: base, userId: 512, fetch: f, maxAttempts: 1, ...timers, document: null, window: null });
  const seen = collect(s);
  await s.start();
  s.sessionId = newSessionId(); // its lease ran out: the heartbeat is a 404
  reachable = false;
  await timers.fire();
  assert.equal(s.state, "ended");
  const ended = seen.find((e) => e.type === "ended");
  assert.ok(ended, "an ended event");
  assert.equal(ended.detail.reason, "expired");
  assert.equal(ended.detail.status, 404);
  assert.ok(seen.some((e) => e.type === "error"), "the reopen's error too");
  assert.deepEqual(timers.pending(), []);
});

test("pagehide ends the session with a keepalive DELETE", async () => {
  const window = new EventTarget();
  const sent = [];
  const recording = (url, init) => {
    sent.push(init);
    return fetch(url, init);
  };
  const s = new StreamSession({ baseUrl: base, userId: 507, fetch: recording, ...manualTimers(), document: null, window });
  const seen = collect(s);
  await s.start();
  window.dispatchEvent(new Event("pagehide"));
  assert.equal(s.state, "stopped");
  const del = sent.at(-1);
  assert.equal(del.method, "DELETE");
  assert.equal(del.keepalive, true);
  assert.equal(seen.at(-1).type, "ended");
  assert.equal(seen.at(-1).detail.reason, "stopped");
  // The DELETE reaches the service.
  for (let i = 0; i < 3000 && (await listed(507)).streamCount !== 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal((await listed(507)).streamCount, 0);
});

test("retryDelay: Retry-After when given, else exponential back-off, capped, plus jitter", () => {
  assert.equal(retryDelay(1, "3", { random: () => 0 }), 3000);
  assert.equal(retryDelay(1, "3", { random: () => 1 }), 4500);
  assert.equal(retryDelay(1, null, { random: () => 0 }), 500);
  assert.equal(retryDelay(3, null, { random: () => 0 }), 2000);
  assert.equal(retryDelay(20, null, { random: () => 0 }), 30000);
  assert.equal(retryDelay(1, "nonsense", { random: () => 0 }), 500);
});

test("bad options are refused before anything is sent", () => {
  assert.throws(() => new StreamSession({ baseUrl: base }), /userId/);
  assert.throws(() => new StreamSession({ baseUrl: base, userId: "x" }), /userId/);
  assert.throws(() => new StreamSession({ baseUrl: base, userId: 1, sessionId: "a b" }), /sessionId/);
  assert.match(newSessionId(), /^[0-9a-f]{32}$/);
});

test("the service serves the client at /ui/videostreams.js and the example player at /ui/player.html", async () => {
  const { readFile } = await import("node:fs/promises");
  const js = await fetch(`${base}/ui/videostreams.js`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get("content-type"), /^text\/javascript/);
  assert.equal(await js.text(), await readFile(path.join(root, "clients/js/videostreams.js"), "utf8"));
  const page = await fetch(`${base}/ui/player.html`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /^text\/html/);
  const html = await page.text();
  assert.match(html, /import \{ StreamSession \} from "\/ui\/videostreams\.js"/);
  assert.ok(html.split("\n").filter((l) => l !== "").length <= 20, "a 20-line example");
});
