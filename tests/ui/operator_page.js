#!/usr/bin/env node
// Drives the operator page (/ui/) in headless Chromium against running
// nodes and checks what it shows against what the API says.
//
//   node tests/ui/operator_page.js cluster --url http://127.0.0.2:PORT
//        [--others URL,URL] --user 77 --members 3 [--screenshot FILE]
//   node tests/ui/operator_page.js token --url http://127.0.0.1:PORT
//        --token TOKEN
//
// `cluster`: opens sessions and streams through the API first, then checks
// that the page lists the members (status, shard counts), draws every shard
// with its owner and state, shows each node's open streams and request
// rates, and that a user look-up shows the user's shard, owner and
// sessions (`--others`: the other nodes, which get a share of the
// background traffic). `token`: the page of a node with an admin token asks for it,
// refuses a wrong one, and keeps the right one in sessionStorage only.
// Either fails on any failed request, any HTTP error that the scenario does
// not cause on purpose, and any console error or uncaught exception.
//
// Needs puppeteer-core (tests/npm, found through NODE_PATH) and Debian's
// chromium (VIDEOSTREAMS_CHROMIUM, default /usr/bin/chromium). Exit 0 when
// every check passed; otherwise each failure is printed and the exit is 1.
"use strict";

const puppeteer = require("puppeteer-core");

const TIMEOUT_MS = 60000; // generous: the machine may be busy

function parseArgs(argv) {
  const args = { mode: argv[0] };
  for (let i = 1; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || i + 1 >= argv.length)
      throw new Error("bad argument " + argv[i]);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  if (!args.url) throw new Error("--url is required");
  return args;
}

/// The documented user-to-shard mapping (actors/shard_map.hpp), written
/// again here so that the test does not take it from the service.
function shardOf(user, shards) {
  const M = (1n << 64n) - 1n;
  let x = BigInt(user);
  x ^= x >> 30n;
  x = (x * 0xbf58476d1ce4e5b9n) & M;
  x ^= x >> 27n;
  x = (x * 0x94d049bb133111ebn) & M;
  x ^= x >> 31n;
  return Number(x % BigInt(shards));
}

async function api(base, method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers["Authorization"] = "Bearer " + token;
  const res = await fetch(base + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function must(base, method, path, body, expected) {
  const r = await api(base, method, path, body);
  if (!expected.includes(r.status))
    throw new Error(method + " " + path + " answered " + r.status + " " + JSON.stringify(r.body));
  return r.body;
}

/// Waits until `probe` (run in the page) returns a truthy value, and returns
/// it; on time-out, fails with `what` and the last value seen.
async function waitInPage(page, what, probe, ...args) {
  const deadline = Date.now() + TIMEOUT_MS;
  let last;
  for (;;) {
    last = await page.evaluate(probe, ...args);
    if (last && last.ok) return last;
    if (Date.now() > deadline)
      throw new Error("timed out waiting for " + what + "; last seen: " + JSON.stringify(last));
    await new Promise((r) => setTimeout(r, 200));
  }
}

/// Records what would show in the browser's console as a problem.
function watch(page, allowed) {
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !allowed(m.text(), m.location()))
      problems.push("console error: " + m.text() + " at " + JSON.stringify(m.location()));
  });
  page.on("pageerror", (e) => problems.push("uncaught: " + e.message));
  page.on("requestfailed", (r) =>
    problems.push("request failed: " + r.method() + " " + r.url() + " " + (r.failure() || {}).errorText));
  page.on("response", (r) => {
    if (r.status() >= 400 && !allowed("", { url: r.url() }, r.status()))
      problems.push("HTTP " + r.status() + " for " + r.request().method() + " " + r.url());
  });
  return problems;
}

async function launch() {
  return puppeteer.launch({
    executablePath: process.env.VIDEOSTREAMS_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--disable-extensions"],
    timeout: TIMEOUT_MS,
  });
}

async function clusterScenario(args, check) {
  const base = args.url;
  const user = args.user || "77";
  const memberCount = Number(args.members || 3);
  const view = await must(base, "GET", "/api/cluster", undefined, [200]);
  check(view.members.length === memberCount,
        "the cluster has " + view.members.length + " members, not " + memberCount);
  const ownerOf = (u) => view.shards[shardOf(u, view.shardCount)].owner;

  // Sessions of the user looked up: two v2 sessions and a startstream one.
  await must(base, "POST", "/api/v2/users/" + user + "/streams",
             { sessionId: "tv-living-room", ttlSeconds: 600 }, [200, 201]);
  await must(base, "POST", "/api/v2/users/" + user + "/streams",
             { sessionId: "phone-2", ttlSeconds: 600 }, [200, 201]);
  await must(base, "GET", "/api/startstream/" + user, undefined, [200]);
  // A stream for each of users 1-40, so that every node has some.
  const expectedOpen = new Map(view.members.map((m) => [m.nodeId, 0]));
  for (let u = 1; u <= 40; ++u) {
    if (String(u) === user) continue;
    await must(base, "GET", "/api/startstream/" + u, undefined, [200]);
    expectedOpen.set(ownerOf(u), expectedOpen.get(ownerOf(u)) + 1);
  }
  expectedOpen.set(ownerOf(user), expectedOpen.get(ownerOf(user)) + 3);
  const listed = await must(base, "GET", "/api/v2/users/" + user + "/streams", undefined, [200]);

  // Light traffic to every node while the page refreshes, so that it has
  // rates to show: lists, refused opens for the user at the limit
  // (denials), and, until `churn` is turned off, sessions opened and closed
  // (grants; they would blur the open stream counts checked below).
  const targets = [base, ...(args.others ? args.others.split(",") : [])];
  let traffic = true;
  let churn = true;
  const background = (async () => {
    for (let i = 0; traffic && i < 3000; ++i) {
      const to = targets[i % targets.length];
      const u = 200 + (i % 50);
      if (i % 4 === 0 && churn) {
        const r = await api(to, "POST", "/api/v2/users/" + u + "/streams", { sessionId: "bg" });
        if (r.status === 201 || r.status === 200)
          await api(to, "DELETE", "/api/v2/users/" + u + "/streams/bg");
      } else if (i % 4 === 2) {
        await api(to, "POST", "/api/v2/users/" + user + "/streams", { sessionId: "one-too-many" });
      } else {
        await api(to, "GET", "/api/v2/users/" + u + "/streams");
      }
      await new Promise((r) => setTimeout(r, 15));
    }
  })();

  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900, deviceScaleFactor: 1 });
    // While `outage` holds, the page's figures request is answered 503 (a
    // node that cannot gather them), on purpose.
    let outage = false;
    // While `lookupMarkup` holds, a look-up is answered 503 with markup in
    // its message.
    let lookupMarkup = false;
    const problems = watch(page, (text, where, status) =>
      (outage || lookupMarkup) && (status === 503 || /status of 503/.test(text)));
    await page.setRequestInterception(true);
    page.on("request", (r) => {
      if (outage && new URL(r.url()).pathname === "/api/cluster/metrics")
        r.respond({ status: 503, contentType: "application/json",
                    body: JSON.stringify({ msg: "test outage" }) });
      else if (lookupMarkup && new URL(r.url()).pathname.startsWith("/api/cluster/users/"))
        r.respond({ status: 503, contentType: "application/json",
                    body: JSON.stringify({ msg: '<i id="injected">x</i>' }) });
      else
        r.continue();
    });
    await page.goto(base + "/ui/", { waitUntil: "load", timeout: TIMEOUT_MS });

    // Members: one row each, with status and shard count as the API says.
    const rows = await waitInPage(page, "a row per member", (n) => {
      const rows = [...document.querySelectorAll("#members tbody tr")];
      return { ok: rows.length === n, rows: rows.map((r) => ({
        node: r.dataset.node, cells: [...r.cells].map((c) => c.textContent.trim()) })) };
    }, memberCount);
    for (const m of view.members) {
      const row = rows.rows.find((r) => r.node === m.nodeId);
      check(row, "no row for member " + m.nodeId);
      if (!row) continue;
      check(row.cells[1] === m.status, m.nodeId + " shows status " + row.cells[1] + ", not " + m.status);
      check(Number(row.cells[2]) === m.shards, m.nodeId + " shows " + row.cells[2] + " shards, not " + m.shards);
      // Where its HTTP port is, as a URL writes it: IPv6 in brackets.
      const address = (m.advertiseHost.includes(":") ? "[" + m.advertiseHost + "]" : m.advertiseHost) + ":" + m.httpPort;
      check(row.cells[3] === address, m.nodeId + " shows address " + row.cells[3] + ", not " + address);
      // The node that serves the page says so, and only it.
      check(row.cells[0].endsWith("(this node)") === (m.nodeId === view.nodeId),
            m.nodeId + "'s name cell is " + row.cells[0]);
    }
    const cards = await page.evaluate(() => ({
      members: document.getElementById("c-members").textContent,
      membersSub: document.getElementById("c-members-sub").textContent,
      shards: document.getElementById("c-shards").textContent }));
    check(cards.members === String(memberCount), "the members card shows " + cards.members);
    check(cards.membersSub === memberCount + " up", "the members card says " + cards.membersSub);
    check(cards.shards === String(view.shardCount), "the shards card shows " + cards.shards);

    // The shard grid: every shard, with its owner and state.
    const grid = await waitInPage(page, "the shard grid", (n) => {
      const cells = [...document.querySelectorAll("#grid .shard")];
      return { ok: cells.length === n, cells: cells.map((c) => ({
        shard: Number(c.dataset.shard), owner: c.dataset.owner, state: c.dataset.state,
        color: getComputedStyle(c).backgroundColor })) };
    }, view.shardCount);
    const colorOfOwner = new Map();
    for (const s of view.shards) {
      const cell = grid.cells[s.shard];
      check(cell && cell.shard === s.shard, "grid cell " + s.shard + " is missing");
      if (!cell) continue;
      check(cell.owner === (s.owner || ""), "shard " + s.shard + " shows owner " + cell.owner + ", not " + s.owner);
      check(cell.state === s.state, "shard " + s.shard + " shows state " + cell.state);
      if (!colorOfOwner.has(s.owner)) colorOfOwner.set(s.owner, cell.color);
      check(colorOfOwner.get(s.owner) === cell.color, "shard " + s.shard + " is not coloured as its owner's other shards");
    }
    check(new Set(colorOfOwner.values()).size === colorOfOwner.size, "two owners share a colour");

    // Rates once two readings were taken.
    await waitInPage(page, "request rates", () => {
      const rows = [...document.querySelectorAll("#members tbody tr")];
      return { ok: rows.length > 0 && rows.every((r) => r.cells.length > 9
                     && /^[0-9.,]+$/.test(r.cells[6].textContent.trim())
                     && Number(r.cells[8].textContent) > 0) };
    });
    churn = false;
    // Open streams per node (once no churned session is open).
    const figures = await waitInPage(page, "each node's open streams and rates", (expected) => {
      const out = {};
      let ok = true;
      for (const r of document.querySelectorAll("#members tbody tr")) {
        const cells = [...r.cells].map((c) => c.textContent.trim());
        out[r.dataset.node] = cells;
        if (Number(cells[5].replace(/,/g, "")) !== expected[r.dataset.node]) ok = false;
        if (!/^[0-9.,]+$/.test(cells[6]) || !/^[0-9.,]+$/.test(cells[7])) ok = false;
      }
      return { ok, out };
    }, Object.fromEntries(expectedOpen));
    // Nothing failed: no node shows a 5xx rate.
    for (const [node, cells] of Object.entries(figures.out))
      check(cells[10] === "0.0", node + " shows a 5xx rate of " + cells[10]);
    const userRates = Object.values(figures.out).map((c) => Number(c[6].replace(/,/g, "")));
    check(userRates.some((x) => x > 0), "no node shows a user request rate above 0: " + JSON.stringify(figures.out));
    const total = await page.evaluate(() => document.getElementById("c-streams").textContent);
    check(total === String(40 + 3 - (Number(user) <= 40 ? 1 : 0)), "the open streams card shows " + total);

    // The user look-up, on Enter.
    await page.click("#user");
    await page.type("#user", user);
    await page.keyboard.press("Enter");
    const found = await waitInPage(page, "the look-up's answer", () => {
      const facts = document.getElementById("lookup-facts");
      const rows = [...document.querySelectorAll("#sessions tbody tr")];
      return { ok: !!facts && rows.length > 0,
               facts: facts && [...facts.children].map((d) => d.textContent),
               owner: facts && document.getElementById("lookup-owner").textContent,
               sessions: rows.map((r) => r.cells[0].textContent.trim()),
               expires: rows.map((r) => r.cells[2].textContent.trim()),
               highlighted: [...document.querySelectorAll(".shard.found")].map((c) => Number(c.dataset.shard)) };
    });
    const shard = shardOf(user, view.shardCount);
    check(found.facts.some((f) => f === "Shard" + shard + " of " + view.shardCount),
          "the look-up does not show shard " + shard + ": " + JSON.stringify(found.facts));
    check(found.facts.some((f) => f === "Streams" + listed.streamCount + " of " + listed.maxStreams),
          "the look-up does not show " + listed.streamCount + " of " + listed.maxStreams + " streams: " + JSON.stringify(found.facts));
    check(found.owner === "Owner" + ownerOf(user), "the look-up shows owner " + found.owner + ", not " + ownerOf(user));
    const want = listed.sessions.map((s) => s.sessionId === null ? "startstream (no id)" : s.sessionId);
    check(JSON.stringify(found.sessions) === JSON.stringify(want),
          "the look-up lists " + JSON.stringify(found.sessions) + ", the API " + JSON.stringify(want));
    check(JSON.stringify(want) === JSON.stringify(["tv-living-room", "phone-2", "startstream (no id)"]),
          "the API lists " + JSON.stringify(want));
    check(JSON.stringify(found.highlighted) === JSON.stringify([shard]), "the grid highlights " + found.highlighted);
    // A lease that never ends says so; the others show when they end.
    listed.sessions.forEach((s, i) => {
      const shown = found.expires[i] || "";
      check(s.expiresAt === null ? shown === "never" : /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d · in /.test(shown),
            "session " + s.sessionId + " (expiresAt " + s.expiresAt + ") shows Expires " + shown);
    });
    // The highlight outlives the grid's next refresh.
    const before = await page.evaluate(() => document.getElementById("status").textContent);
    const after = await waitInPage(page, "a refresh after the look-up", (was) => {
      const now = document.getElementById("status").textContent;
      return { ok: now !== was && /^updated/.test(now),
               highlighted: [...document.querySelectorAll(".shard.found")].map((c) => Number(c.dataset.shard)) };
    }, before);
    check(JSON.stringify(after.highlighted) === JSON.stringify([shard]),
          "after a refresh the grid highlights " + after.highlighted);

    // A user with no open stream.
    await page.click("#user", { clickCount: 3 });
    await page.type("#user", " 100000 "); // spaces around it, as pasted
    await page.keyboard.press("Enter");
    const empty = await waitInPage(page, "the look-up of a user without streams", () => {
      const out = document.getElementById("lookup-result");
      return { ok: !!document.getElementById("lookup-facts") && /User100000/.test(out.textContent),
               text: out.textContent };
    });
    check(/No open sessions\./.test(empty.text), "a user without streams shows: " + empty.text);

    // Not a user id: said at once, nothing asked.
    await page.click("#user", { clickCount: 3 });
    await page.type("#user", "7a");
    await page.keyboard.press("Enter");
    const bad = await waitInPage(page, "the refusal of a bad user id", () => {
      const out = document.getElementById("lookup-result");
      return { ok: !document.getElementById("lookup-facts"), text: out.textContent };
    });
    check(bad.text === "A user id is a non-negative whole number.", "a bad user id shows: " + bad.text);

    // Figures that cannot be had: a banner says why, the shards still show,
    // and it goes once they can be had again.
    outage = true;
    const banner = await waitInPage(page, "the figures banner", () => {
      const b = document.getElementById("banner");
      return { ok: !b.hidden, text: b.textContent,
               shards: document.querySelectorAll("#grid .shard").length };
    });
    check(banner.text === "Figures unavailable: /api/cluster/metrics answered 503: test outage",
          "the banner says " + banner.text);
    check(banner.shards === view.shardCount, "the grid shows " + banner.shards + " shards during the outage");
    outage = false;
    await waitInPage(page, "the banner to go", () => ({ ok: document.getElementById("banner").hidden }));

    // What the service says is shown as text, never read as markup.
    lookupMarkup = true;
    await page.click("#user", { clickCount: 3 });
    await page.type("#user", "8");
    await page.keyboard.press("Enter");
    const shownError = await waitInPage(page, "the look-up's error", () => {
      const out = document.getElementById("lookup-result");
      return { ok: /answered 503/.test(out.textContent), text: out.textContent,
               injected: !!document.getElementById("injected") };
    });
    lookupMarkup = false;
    check(!shownError.injected, "a message's markup became an element");
    check(/answered 503: <i id="injected">x<\/i>$/.test(shownError.text), "the look-up's error shows: " + shownError.text);

    if (args.screenshot) {
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.screenshot({ path: args.screenshot, fullPage: true });
      console.log("screenshot: " + args.screenshot);
    }
    for (const p of problems) check(false, p);
  } finally {
    traffic = false;
    await background;
    await browser.close();
  }
}

async function tokenScenario(args, check) {
  const base = args.url;
  const token = args.token;
  const browser = await launch();
  try {
    const page = await browser.newPage();
    // The 401s that ask for the token and refuse the wrong one are the point.
    const problems = watch(page, (text, where, status) =>
      status === 401 || /status of 401/.test(text));
    await page.goto(base + "/ui/", { waitUntil: "load", timeout: TIMEOUT_MS });
    await waitInPage(page, "the token form", () => ({
      ok: !document.getElementById("login").hidden && document.getElementById("dashboard").hidden }));
    await page.type("#token", "wrong-" + token);
    await page.keyboard.press("Enter");
    const refused = await waitInPage(page, "the wrong token's refusal", () => {
      const t = document.getElementById("login-error").textContent;
      return { ok: /refused/.test(t), text: t };
    });
    check(/refused/.test(refused.text), "no refusal shown");
    check(await page.evaluate(() => sessionStorage.length) === 0, "a refused token was kept");
    await page.type("#token", "  " + token + " "); // as pasted: the spaces are not the token's
    await page.keyboard.press("Enter");
    await waitInPage(page, "the dashboard", () => ({
      ok: document.getElementById("login").hidden && !document.getElementById("dashboard").hidden
          && document.querySelectorAll("#grid .shard").length > 0 }));
    const stored = await page.evaluate(() => ({
      session: sessionStorage.getItem("videostreams.adminToken"), local: localStorage.length,
      cookie: document.cookie }));
    check(stored.session === token, "the token is not in sessionStorage");
    check(stored.local === 0 && stored.cookie === "", "the token went beyond sessionStorage");
    // A reload in the same tab keeps it; a new tab does not have it.
    await page.reload({ waitUntil: "load" });
    await waitInPage(page, "the dashboard after a reload", () => ({
      ok: document.getElementById("login").hidden && document.querySelectorAll("#grid .shard").length > 0 }));
    // A token refused later (revoked between two requests), on a look-up or
    // on the figures alone, is forgotten too, and the form asks again.
    let refuse = null; // the path prefix answered 401
    await page.setRequestInterception(true);
    page.on("request", (r) => {
      if (refuse && new URL(r.url()).pathname.startsWith(refuse))
        r.respond({ status: 401, contentType: "application/json",
                    body: JSON.stringify({ msg: "unauthorized" }) });
      else
        r.continue();
    });
    const askedAgain = (what) => waitInPage(page, "the token form after a refused " + what, () => ({
      ok: !document.getElementById("login").hidden,
      dashboard: !document.getElementById("dashboard").hidden,
      error: document.getElementById("login-error").textContent,
      kept: sessionStorage.getItem("videostreams.adminToken") }));
    for (const [what, path] of [["look-up", "/api/cluster/users/"], ["figures request", "/api/cluster/metrics"]]) {
      refuse = null;
      if (!(await page.evaluate(() => document.getElementById("login").hidden))) {
        await page.type("#token", token);
        await page.keyboard.press("Enter");
      }
      await waitInPage(page, "the dashboard before a refused " + what, () => ({
        ok: document.getElementById("login").hidden && document.querySelectorAll("#grid .shard").length > 0 }));
      refuse = path;
      if (what === "look-up") {
        await page.type("#user", "42");
        await page.keyboard.press("Enter");
      }
      const asked = await askedAgain(what);
      check(!asked.dashboard, "the dashboard still shows after a refused " + what);
      check(asked.kept === null, "a token refused on a " + what + " was kept: " + asked.kept);
      check(/refused/.test(asked.error), "no refusal shown after a refused " + what + ": " + asked.error);
    }
    refuse = null;
    const other = await browser.newPage();
    watch(other, () => true);
    await other.goto(base + "/ui/", { waitUntil: "load", timeout: TIMEOUT_MS });
    await waitInPage(other, "the token form in a new tab", () => ({
      ok: !document.getElementById("login").hidden }));
    for (const p of problems) check(false, p);
  } finally {
    await browser.close();
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const failures = [];
  const check = (ok, what) => { if (!ok) failures.push(what); };
  if (args.mode === "cluster") await clusterScenario(args, check);
  else if (args.mode === "token") await tokenScenario(args, check);
  else throw new Error("mode must be cluster or token");
  for (const f of failures) console.log("FAILED: " + f);
  console.log(failures.length ? failures.length + " check(s) failed" : "every check passed");
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.log("FAILED: " + (e && e.stack || e));
  process.exit(1);
});
