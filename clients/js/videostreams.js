// videostreams browser client: one dependency-free ES module for web
// players. It holds one v2 stream session (docs/api.md, "Stream sessions"):
// opens it, heartbeats at the interval the server advises, retries network
// errors and 503s (honouring Retry-After, with jitter) without ever opening
// a second session, surfaces 409 (with the open sessions, so the player can
// offer to stop one) and 410 (another device ended this one), and ends the
// session when the page goes away.
//
//   import { StreamSession } from "/ui/videostreams.js";
//   const s = new StreamSession({ userId: 7, pauseWhenHidden: true });
//   s.addEventListener("ended", (e) => player.stop(e.detail.message));
//   const r = await s.start();
//   if (r.limitReached) {            // 409: r.sessions lists the others
//     await s.start({ replaceSessionId: r.sessions[0].sessionId });
//   }
//
// Events (each an Event with a `detail`): "open" (the 201/200 answer),
// "heartbeat" (each renewal's answer), "limit" (the 409 answer), "ended"
// ({reason, status, message, detail}: "ended-elsewhere" for a 410,
// "stopped" after stop() or pagehide), "retry" ({attempt, delayMs,
// status, error}) and "error" ({error}) when a heartbeat gives up.
//
// Everything the module touches in its environment can be injected (fetch,
// timers, random, document, window), so that it runs, and is tested, in
// Node as in a browser.

/** The characters of a session id (docs/api.md). */
const SESSION_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** A new random session id: 128 bits in hex. */
export function newSessionId(random = Math.random) {
  const c = globalThis.crypto;
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function" && random === Math.random)
    c.getRandomValues(bytes);
  else
    for (let i = 0; i < bytes.length; i++)
      bytes[i] = Math.floor(random() * 256) & 0xff;
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * How long to wait before retry `attempt` (1, 2, ...): the server's
 * Retry-After when it sent one, else exponential back-off from `baseMs`
 * capped at `maxMs`; plus up to half of that again at random, so that many
 * players that failed together do not come back together.
 */
export function retryDelay(attempt, retryAfterHeader, options = {}) {
  const baseMs = options.baseMs ?? 500;
  const maxMs = options.maxMs ?? 30000;
  const random = options.random ?? Math.random;
  let delay = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  const seconds = retryAfterHeader == null ? NaN : Number(retryAfterHeader);
  if (Number.isFinite(seconds) && seconds >= 0)
    delay = Math.min(maxMs, seconds * 1000);
  return Math.round(delay + delay * 0.5 * random());
}

/** An error the server answered (4xx other than 404, 409 and 410). */
export class VideostreamsError extends Error {
  constructor(status, body) {
    super(`videostreams: ${status} ${body && body.msg ? body.msg : ""}`.trim());
    this.name = "VideostreamsError";
    this.status = status;
    this.body = body;
  }
}

function event(type, detail) {
  const e = new Event(type);
  e.detail = detail;
  return e;
}

async function bodyOf(res) {
  const text = await res.text();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    return { msg: text };
  }
}

/**
 * One stream session of one user. States: "idle", "opening", "playing",
 * "paused" (heartbeats paused while the page is hidden), "limit" (409),
 * "ended" (410, or the lease could not be kept), "stopped".
 */
export class StreamSession extends EventTarget {
  /**
   * @param {object} o
   * @param {number|string} o.userId the user whose stream this is
   * @param {string} [o.baseUrl] where the service is ("" = this origin)
   * @param {string} [o.sessionId] this player's session id (default: a new
   *   random one, kept for the session's life so that a retry never opens
   *   a second session)
   * @param {number} [o.ttlSeconds] the lease to ask for (server default 60)
   * @param {boolean} [o.pauseWhenHidden] pause heartbeats while the page is
   *   hidden (the lease then runs out after its TTL, freeing the slot); a
   *   heartbeat goes out as soon as the page is visible again
   * @param {number} [o.maxAttempts] tries per request before giving up on
   *   network errors and 503s (default 8)
   */
  constructor(o) {
    super();
    if (o == null || o.userId == null) throw new TypeError("userId is required");
    this.userId = String(o.userId);
    if (!/^[0-9]+$/.test(this.userId)) throw new TypeError("userId must be a non-negative integer");
    this.baseUrl = (o.baseUrl ?? "").replace(/\/+$/, "");
    this.random = o.random ?? Math.random;
    this.sessionId = o.sessionId ?? newSessionId(this.random);
    if (!SESSION_ID.test(this.sessionId)) throw new TypeError("sessionId must be 1-64 of [A-Za-z0-9._-]");
    this.ttlSeconds = o.ttlSeconds;
    this.pauseWhenHidden = Boolean(o.pauseWhenHidden);
    this.maxAttempts = o.maxAttempts ?? 8;
    this.retry = { baseMs: o.retryBaseMs ?? 500, maxMs: o.retryMaxMs ?? 30000, random: this.random };
    this.fetch = o.fetch ?? globalThis.fetch.bind(globalThis);
    this.setTimeout = o.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = o.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.document = o.document !== undefined ? o.document : globalThis.document;
    this.window = o.window !== undefined ? o.window : globalThis.window;
    this.state = "idle";
    this.heartbeatIntervalSeconds = null;
    this.last = null; // the last session answer (201/200)
    this._timer = null;
    this._generation = 0; // bumped by stop(): late answers are ignored
    this._waits = new Set(); // back-off waits of this session's own requests
    this._opening = null; // settles when the POST in flight has
    this._mayHold = false; // whether the service may hold this session
    this._onVisibility = () => this._visibilityChanged();
    this._onPageHide = () => this._pageHidden();
  }

  /** The URL of this user's streams. */
  get streamsUrl() {
    return `${this.baseUrl}/api/v2/users/${this.userId}/streams`;
  }

  /** The URL of session `id` (this one by default). */
  sessionUrl(id = this.sessionId) {
    return `${this.streamsUrl}/${encodeURIComponent(id)}`;
  }

  /**
   * Opens the session (or renews it, if it is open: safe to call again).
   * With `replaceSessionId`, ends that session of the same user in the same
   * decision (a player taking over another device's slot).
   * Resolves to the answer: `{ok: true, status, ...}` for 201/200,
   * `{ok: false, limitReached: true, status: 409, sessions, ...}` at the
   * limit, `{ok: false, stopped: true}` when stop() came first. Rejects
   * with a VideostreamsError for another 4xx, or the last network error /
   * 503 once `maxAttempts` tries failed (the state is then "idle").
   */
  async start({ replaceSessionId } = {}) {
    this._listen();
    this._setState("opening");
    const body = { sessionId: this.sessionId };
    if (this.ttlSeconds != null) body.ttlSeconds = this.ttlSeconds;
    if (replaceSessionId != null) body.replaceSessionId = replaceSessionId;
    const generation = this._generation;
    // From the first try on, the service may hold the session, even if no
    // answer ever comes back: stop() then ends it.
    this._mayHold = true;
    const sending = this._send("POST", this.streamsUrl, body, { own: true });
    const opening = sending.then(() => {}, () => {});
    this._opening = opening;
    let res, json;
    try {
      ({ res, json } = await sending);
    } catch (error) {
      if (generation === this._generation) {
        this._setState("idle");
        this._unlisten();
      }
      throw error;
    } finally {
      if (this._opening === opening) this._opening = null;
    }
    if (generation !== this._generation) return { ok: false, stopped: true };
    if (res.status === 201 || res.status === 200) {
      this._opened(json);
      this.dispatchEvent(event("open", json));
      return { ok: true, status: res.status, ...json };
    }
    this._mayHold = false; // a 409 or another 4xx opened nothing
    if (res.status === 409) {
      this._setState("limit");
      this.dispatchEvent(event("limit", json));
      return { ok: false, limitReached: true, status: 409, ...json };
    }
    this._setState("idle");
    this._unlisten();
    throw new VideostreamsError(res.status, json);
  }

  /** Lists the user's open sessions (`GET .../streams`). */
  async sessions() {
    const { res, json } = await this._send("GET", this.streamsUrl);
    if (res.status !== 200) throw new VideostreamsError(res.status, json);
    return json;
  }

  /**
   * Ends session `id` of this user, another device's (to free its slot, as
   * "stop watching on another device"). Resolves to true when it was open,
   * false when it was not (404).
   */
  async kick(id) {
    const { res, json } = await this._send("DELETE", this.sessionUrl(id));
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw new VideostreamsError(res.status, json);
  }

  /**
   * Ends this session: no more heartbeats or retries, and a DELETE if the
   * service may hold it, sent after a POST still in flight has landed (so
   * that it cannot open the session behind the DELETE). Resolves to true
   * when the DELETE closed an open session.
   */
  async stop() {
    const opening = this._opening;
    this._halt("stopped");
    if (opening) await opening;
    if (!this._mayHold) return false;
    const { res } = await this._send("DELETE", this.sessionUrl());
    if (res.status === 200 || res.status === 404) this._mayHold = false;
    return res.status === 200;
  }

  // --- inside ---

  _setState(s) {
    this.state = s;
  }

  _opened(json) {
    this.last = json;
    this.heartbeatIntervalSeconds = json.heartbeatIntervalSeconds ?? 20;
    if (this.pauseWhenHidden && this._hidden()) {
      this._setState("paused");
      return;
    }
    this._setState("playing");
    this._schedule(this.heartbeatIntervalSeconds * 1000);
  }

  _schedule(ms) {
    if (this._timer != null) this.clearTimeout(this._timer);
    const generation = this._generation;
    this._timer = this.setTimeout(() => {
      this._timer = null;
      if (generation !== this._generation) return undefined;
      return this._beat();
    }, ms);
  }

  /** One heartbeat; returns a promise that settles when it is handled. */
  async _beat() {
    if (this.state !== "playing") return;
    const generation = this._generation;
    let answer;
    try {
      answer = await this._send("PUT", this.sessionUrl(), undefined, { own: true });
    } catch (error) {
      if (generation !== this._generation) return;
      // Retries ran out: the lease may still hold for a while; try again at
      // the next interval rather than giving the stream up.
      this.dispatchEvent(event("error", { error }));
      this._schedule(this.heartbeatIntervalSeconds * 1000);
      return;
    }
    if (generation !== this._generation || this.state !== "playing") return;
    const { res, json } = answer;
    if (res.status === 200) {
      this.last = json;
      this.heartbeatIntervalSeconds = json.heartbeatIntervalSeconds ?? this.heartbeatIntervalSeconds;
      this.dispatchEvent(event("heartbeat", json));
      this._schedule(this.heartbeatIntervalSeconds * 1000);
      return;
    }
    if (res.status === 410) {
      this._mayHold = false;
      this._halt("ended");
      this.dispatchEvent(event("ended", { reason: "ended-elsewhere", status: 410, message: json.msg, detail: json.detail }));
      return;
    }
    if (res.status === 404) {
      // The lease ran out (a long pause, a network outage): open the same
      // session again. At the limit that is a 409, surfaced as "limit". If
      // it cannot be opened (retries ran out, another 4xx), the stream is
      // no longer held: say so.
      try {
        await this.start();
      } catch (error) {
        if (generation !== this._generation) return;
        this.dispatchEvent(event("error", { error }));
        this._halt("ended");
        this.dispatchEvent(event("ended", { reason: "expired", status: 404, message: "the lease ran out and could not be opened again" }));
      }
      return;
    }
    this.dispatchEvent(event("error", { error: new VideostreamsError(res.status, json) }));
    this._schedule(this.heartbeatIntervalSeconds * 1000);
  }

  /**
   * Sends one request, retrying network errors and 503s with back-off; the
   * same request each time (a POST carries the same sessionId, so a retry
   * renews what an earlier try may have opened instead of opening more).
   * With `own` (this session's POST and PUT), stop() ends the retries: it
   * then resolves to `{res: null, json: null}` instead of trying again.
   */
  async _send(method, url, body, { own = false } = {}) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const generation = this._generation;
    const stopped = () => own && generation !== this._generation;
    for (let attempt = 1; ; attempt++) {
      let res;
      let error;
      try {
        res = await this.fetch(url, init);
      } catch (e) {
        error = e;
      }
      if (res && res.status !== 503) return { res, json: await bodyOf(res) };
      if (stopped()) return { res: null, json: null };
      if (attempt >= this.maxAttempts) {
        if (error) throw error;
        throw new VideostreamsError(503, await bodyOf(res));
      }
      const retryAfter = res ? res.headers.get("Retry-After") : null;
      if (res) await bodyOf(res); // let the connection be reused
      const delayMs = retryDelay(attempt, retryAfter, this.retry);
      this.dispatchEvent(event("retry", { attempt, delayMs, status: res ? res.status : null, error }));
      await this._wait(delayMs, own);
      if (stopped()) return { res: null, json: null };
    }
  }

  /** Waits `ms`; with `own`, stop() ends the wait at once. */
  _wait(ms, own) {
    return new Promise((resolve) => {
      const wait = { resolve, id: null };
      wait.id = this.setTimeout(() => {
        this._waits.delete(wait);
        resolve();
      }, ms);
      if (own) this._waits.add(wait);
    });
  }

  _halt(state) {
    this._generation++;
    if (this._timer != null) this.clearTimeout(this._timer);
    this._timer = null;
    for (const wait of this._waits) {
      this.clearTimeout(wait.id);
      wait.resolve();
    }
    this._waits.clear();
    this._setState(state);
    this._unlisten();
  }

  _hidden() {
    return Boolean(this.document) && this.document.visibilityState === "hidden";
  }

  _visibilityChanged() {
    if (!this.pauseWhenHidden) return undefined;
    if (this._hidden() && this.state === "playing") {
      if (this._timer != null) this.clearTimeout(this._timer);
      this._timer = null;
      this._setState("paused");
      return undefined;
    }
    if (!this._hidden() && this.state === "paused") {
      this._setState("playing");
      return this._beat(); // at once: the lease may be near its end
    }
    return undefined;
  }

  _pageHidden() {
    if (this.state === "stopped" || !this._mayHold) return;
    this._halt("stopped");
    this._mayHold = false;
    // keepalive: the request outlives the page (once, no retries: the page
    // is going; an unclosed lease still ends by itself after its TTL).
    try {
      const sent = this.fetch(this.sessionUrl(), { method: "DELETE", keepalive: true });
      if (sent && typeof sent.catch === "function") sent.catch(() => {});
    } catch {
      // nothing to do: the lease expires
    }
    this.dispatchEvent(event("ended", { reason: "stopped", status: null, message: "page hidden" }));
  }

  _listen() {
    if (this._listening) return;
    this._listening = true;
    if (this.document && this.document.addEventListener)
      this.document.addEventListener("visibilitychange", this._onVisibility);
    if (this.window && this.window.addEventListener)
      this.window.addEventListener("pagehide", this._onPageHide);
  }

  _unlisten() {
    if (!this._listening) return;
    this._listening = false;
    if (this.document && this.document.removeEventListener)
      this.document.removeEventListener("visibilitychange", this._onVisibility);
    if (this.window && this.window.removeEventListener)
      this.window.removeEventListener("pagehide", this._onPageHide);
  }
}
