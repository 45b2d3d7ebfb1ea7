#!/usr/bin/env node
// The openapi tier: checks http/openapi.json (the OpenAPI 3.0 description
// served at /api/openapi.json) three ways.
//
//   node tests/openapi/check_openapi.js valid --spec FILE
//       the description is valid OpenAPI 3.0 (@apidevtools/swagger-parser:
//       the OpenAPI schema, and every $ref resolves)
//   node tests/openapi/check_openapi.js routes --spec FILE
//        --endpoints endpoints.json --list-routes BINARY
//       the description's paths and methods, endpoints.json's keys and the
//       router's routes (BINARY prints them) are the same set, each checked
//       against the others in both directions (HEAD and OPTIONS, which the
//       description states once for every route, aside)
//   node tests/openapi/check_openapi.js responses --spec FILE
//        --binary videostreams
//       starts the service twice (with and without an admin token), sends
//       requests that cover every route, method and documented status
//       (successes and errors: 304, 400, 401, 403, 404, 405, 409, 413, 414,
//       415...), and validates each real status, Content-Type, required
//       header and body against the description (ajv); every documented
//       status but 503 must have been seen
//
// Needs the npm packages of tests/npm (found through NODE_PATH). Exit 0
// when every check passed; otherwise each failure is printed, exit 1.
"use strict";

const fs = require("fs");
const { spawn, execFileSync } = require("child_process");

const METHODS = ["get", "put", "post", "delete", "patch"];

function parseArgs(argv) {
  const args = { mode: argv[0] };
  for (let i = 1; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || i + 1 >= argv.length)
      throw new Error("bad argument " + argv[i]);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  if (!args.spec) throw new Error("--spec is required");
  return args;
}

// ---------------------------------------------------------------- valid --

async function validMode(args, check) {
  const SwaggerParser = require("@apidevtools/swagger-parser");
  const spec = JSON.parse(fs.readFileSync(args.spec, "utf8"));
  check(/^3\.0\.\d+$/.test(spec.openapi), "openapi is " + spec.openapi + ", not 3.0.x");
  try {
    await SwaggerParser.validate(structuredClone(spec));
  } catch (e) {
    check(false, "not valid OpenAPI: " + e.message);
    return;
  }
  // Every operation names its responses with a schema for each JSON body,
  // and no response is left without a description.
  for (const [path, item] of Object.entries(spec.paths))
    for (const m of METHODS.filter((m) => item[m])) {
      const op = item[m];
      check(op.operationId, m.toUpperCase() + " " + path + " has no operationId");
      check(op.responses && op.responses.default, m.toUpperCase() + " " + path + " has no default (edge error) response");
    }
}

// --------------------------------------------------------------- routes --

/// "/api/v2/users/{user_id}/streams" as "/api/v2/users/:user_id/streams".
const colonStyle = (path) => path.replace(/\{([^}]+)\}/g, ":$1");

function difference(a, b) {
  return [...a].filter((x) => !b.has(x)).sort();
}

function routesMode(args, check) {
  const spec = JSON.parse(fs.readFileSync(args.spec, "utf8"));
  const endpoints = JSON.parse(fs.readFileSync(args.endpoints, "utf8"));
  const listed = execFileSync(args["list-routes"], { encoding: "utf8" });
  const router = new Set(listed.split("\n").filter((l) => l)
    .filter((l) => !/^(HEAD|OPTIONS) /.test(l)));
  const described = new Set();
  for (const [path, item] of Object.entries(spec.paths))
    for (const m of METHODS.filter((m) => item[m]))
      described.add(m.toUpperCase() + " " + colonStyle(path));
  const keys = new Set(Object.keys(endpoints));
  check(router.size > 0, "the router lists no route");
  const sets = { "the router": router, "the OpenAPI description": described, "endpoints.json": keys };
  const names = Object.keys(sets);
  for (const a of names)
    for (const b of names)
      if (a !== b)
        for (const x of difference(sets[a], sets[b]))
          check(false, x + " is in " + a + " but not in " + b);
  // The router never lists a method the description's conventions do not
  // cover: HEAD goes with a GET, OPTIONS with every route.
  for (const line of listed.split("\n").filter((l) => /^HEAD /.test(l)))
    check(router.has(line.replace(/^HEAD/, "GET")), line + " without GET");
  console.log(router.size + " routes and methods, the same in all three");
}

// ------------------------------------------------------------ responses --

function startService(binary, extra) {
  return new Promise((resolve, reject) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("VIDEOSTREAMS_")));
    const child = spawn(binary, ["--port=0", "--ops-port=0", "--bind=127.0.0.1", "--request-timeout=10s", ...extra],
                        { env, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error("no start line: " + err)); }, 30000);
    child.stderr.on("data", (d) => {
      err += d;
      const port = /listening on [^ ]+:(\d+)/.exec(err);
      const ops = /operations on [^ ]+:(\d+)/.exec(err);
      if (port && ops) {
        clearTimeout(timer);
        resolve({ child, base: "http://127.0.0.1:" + port[1], ops: "http://127.0.0.1:" + ops[1] });
      }
    });
    child.on("exit", (code) => reject(new Error("exited " + code + ": " + err)));
  });
}

function stopService(svc) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => svc.child.kill("SIGKILL"), 30000);
    svc.child.removeAllListeners("exit");
    svc.child.on("exit", () => { clearTimeout(timer); resolve(); });
    svc.child.kill("SIGTERM");
  });
}

/// Sends one raw request (node's http module: any method, any header, a
/// body on any method) and returns status, headers and body.
function request(base, method, path, { body, headers } = {}) {
  const http = require("http");
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const all = { ...(headers || {}) };
    // A body's length up front: no chunked framing where none is needed.
    if (body !== undefined) all["Content-Length"] = Buffer.byteLength(body);
    const req = http.request({ host: url.hostname, port: url.port, method, path, headers: all,
                               agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers,
                                    body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.setTimeout(30000, () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

class Validator {
  constructor(spec, deref) {
    const Ajv = require("ajv");
    const addFormats = require("ajv-formats");
    // Strict, but for "required" naming a property that another part of an
    // allOf declares (as OpenAPI schemas do).
    this.ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
    addFormats(this.ajv);
    this.ajv.addKeyword("example"); // an OpenAPI annotation
    this.spec = deref;
    this.compiled = new Map();
    // Literal paths first, so that /ui/ is not taken for /ui/{file}.
    this.templates = Object.keys(deref.paths).map((p) => ({
      path: p,
      literal: !p.includes("{"),
      re: new RegExp("^" + p.replace(/[.]/g, "\\.").replace(/\{[^}]+\}/g, "[^/]+") + "$"),
    })).sort((a, b) => Number(b.literal) - Number(a.literal));
    this.seen = new Set();
  }

  templateOf(path) {
    const bare = path.split("?")[0];
    const t = this.templates.find((t) => t.re.test(bare));
    return t && t.path;
  }

  schema(s) {
    if (!this.compiled.has(s)) this.compiled.set(s, this.ajv.compile(s));
    return this.compiled.get(s);
  }

  documentedMethods(template) {
    return METHODS.filter((m) => this.spec.paths[template][m]).map((m) => m.toUpperCase());
  }

  /// Checks one exchange against the description; `what` names it.
  check(what, method, path, res, check) {
    const template = this.templateOf(path);
    const where = what + " (" + method + " " + path + " -> " + res.status + ")";
    const type = res.headers["content-type"] || "";
    const asJson = () => {
      try { return JSON.parse(res.body); } catch (e) { check(false, where + ": no JSON: " + res.body.slice(0, 200)); return undefined; }
    };
    const validate = (schema, value, label) => {
      const v = this.schema(schema);
      if (!v(value))
        check(false, where + ": " + label + " does not match its schema: " + this.ajv.errorsText(v.errors) + "; body " + res.body.slice(0, 300));
    };
    check(res.headers["access-control-allow-origin"] === "*", where + ": no Access-Control-Allow-Origin: *");
    if (!template) {
      // No route: the documented 404 of every unknown path.
      check(res.status === 404, where + ": an unknown path answered " + res.status);
      validate(this.spec.components.schemas.Error, asJson(), "the 404 body");
      return;
    }
    const item = this.spec.paths[template];
    const documented = this.documentedMethods(template);
    if (method === "OPTIONS") {
      check(res.status === 204, where + ": the preflight is not a 204");
      const allowed = (res.headers["access-control-allow-methods"] || "").split(", ");
      check(documented.every((m) => allowed.includes(m)) && allowed.includes("OPTIONS"),
            where + ": Access-Control-Allow-Methods " + allowed + " lacks a documented method of " + documented);
      this.seen.add(template + " OPTIONS 204");
      return;
    }
    const opMethod = method === "HEAD" && item.get ? "get" : method.toLowerCase();
    const op = item[opMethod];
    if (!op || (method === "HEAD" && /^\/api\/(start|end)stream\//.test(template))) {
      check(res.status === 405, where + ": a method the description does not list answered " + res.status);
      const allow = (res.headers["allow"] || "").split(", ").filter((m) => m !== "HEAD" && m !== "OPTIONS");
      check(JSON.stringify(allow.sort()) === JSON.stringify([...documented].sort()),
            where + ": Allow says " + res.headers["allow"] + ", the description " + documented);
      if (method === "HEAD") check(res.body === "", where + ": HEAD with a body");
      else validate(this.spec.components.schemas.Error, asJson(), "the 405 body");
      this.seen.add(template + " 405");
      return;
    }
    const key = String(res.status);
    const response = op.responses[key] || op.responses.default;
    check(op.responses[key] || !/^2/.test(key), where + ": an undocumented success status");
    this.seen.add(template + " " + opMethod.toUpperCase() + " " + (op.responses[key] ? key : "default"));
    for (const [name, h] of Object.entries(response.headers || {}))
      if (h.required)
        check(res.headers[name.toLowerCase()] !== undefined, where + ": no " + name + " header");
    if (!response.content) {
      check(res.body === "", where + ": a body where none is documented");
      return;
    }
    const media = response.content[type];
    check(media, where + ": Content-Type " + type + " is not one of " + Object.keys(response.content));
    if (!media || method === "HEAD") {
      if (method === "HEAD") check(res.body === "", where + ": HEAD with a body");
      return;
    }
    if (/json/.test(type)) validate(media.schema, asJson(), "the body");
    else validate(media.schema, res.body, "the body");
  }

  /// Documented (path, method, status) triples never seen.
  unseen(except) {
    const out = [];
    for (const [path, item] of Object.entries(this.spec.paths))
      for (const m of METHODS.filter((m) => item[m]))
        for (const status of Object.keys(item[m].responses).filter((s) => s !== "default")) {
          const k = path + " " + m.toUpperCase() + " " + status;
          if (!this.seen.has(k) && !except(path, m, status)) out.push(k);
        }
    return out;
  }
}

async function responsesMode(args, check) {
  const SwaggerParser = require("@apidevtools/swagger-parser");
  const spec = JSON.parse(fs.readFileSync(args.spec, "utf8"));
  const deref = await SwaggerParser.dereference(structuredClone(spec));
  const v = new Validator(spec, deref);
  const token = "openapi-check-token";
  const auth = { Authorization: "Bearer " + token };
  const json = { "Content-Type": "application/json" };
  const withToken = await startService(args.binary, ["--admin-token=" + token]);
  let withoutToken;
  try {
    withoutToken = await startService(args.binary, []);
    const exchanges = [];
    const go = async (svc, what, method, path, opts = {}, expect) => {
      const res = await request(svc.base, method, path, opts);
      if (expect !== undefined)
        check(res.status === expect, what + ": " + method + " " + path + " answered " + res.status + ", not " + expect + ": " + res.body.slice(0, 200));
      v.check(what, method, path, res, check);
      exchanges.push(res);
      return res;
    };
    const A = withToken, B = withoutToken;
    const big = JSON.stringify({ sessionId: "x", pad: "y".repeat(17 * 1024) });

    // The original API.
    await go(A, "endpoints", "GET", "/api", {}, 200);
    await go(A, "endpoints without a body", "HEAD", "/api", {}, 200);
    for (let i = 1; i <= 3; ++i) await go(A, "a start", "GET", "/api/startstream/7", {}, 200);
    const refused = await go(A, "a start at the limit", "GET", "/api/startstream/007", {}, 200);
    check(/"isNewStreamAllowed":false/.test(refused.body), "the fourth start was allowed: " + refused.body);
    await go(A, "a bad user id", "GET", "/api/startstream/abc", {}, 400);
    await go(A, "an end", "GET", "/api/endstream/7", {}, 200);
    await go(A, "an end for another user", "GET", "/api/endstream/424242");
    await go(A, "a bad user id", "GET", "/api/endstream/-1", {}, 400);
    await go(A, "HEAD on a start", "HEAD", "/api/startstream/7", {}, 405);
    await go(A, "POST on a start", "POST", "/api/startstream/7", {}, 405);

    // Sessions.
    const streams = "/api/v2/users/8/streams";
    await go(A, "an open without a body", "POST", streams, {}, 201);
    await go(A, "an open with an id", "POST", streams, { headers: json, body: '{"sessionId":"s1","ttlSeconds":60}' }, 201);
    await go(A, "the same open again", "POST", streams, { headers: json, body: '{"sessionId":"s1"}' }, 200);
    await go(A, "a third open", "POST", streams, { headers: json, body: '{"sessionId":"s2"}' }, 201);
    await go(A, "an open at the limit", "POST", streams, { headers: json, body: '{"sessionId":"s3"}' }, 409);
    await go(A, "a TTL out of bounds", "POST", streams, { headers: json, body: '{"ttlSeconds":1}' }, 400);
    await go(A, "a body that is no object", "POST", streams, { headers: json, body: "[1]" }, 400);
    await go(A, "a bad session id", "POST", streams, { headers: json, body: '{"sessionId":"a b"}' }, 400);
    await go(A, "a body over 16 KiB", "POST", streams, { headers: json, body: big }, 413);
    await go(A, "a compressed body", "POST", streams, { headers: { ...json, "Content-Encoding": "gzip" }, body: "{}" }, 415);
    await go(A, "a list", "GET", streams, {}, 200);
    await go(A, "a list without a body", "HEAD", streams, {}, 200);
    await go(A, "a list for a bad id", "GET", "/api/v2/users/x/streams", {}, 400);
    await go(A, "a list by the other method", "PATCH", streams, {}, 405);
    await go(A, "a heartbeat", "PUT", streams + "/s1", {}, 200);
    await go(A, "a heartbeat of nothing", "PUT", streams + "/nope", {}, 404);
    await go(A, "a heartbeat with a bad id", "PUT", streams + "/a%21b", {}, 400);
    await go(A, "a heartbeat with a body over 16 KiB", "PUT", streams + "/s1", { headers: json, body: big }, 413);
    await go(A, "a close", "DELETE", streams + "/s1", {}, 200);
    await go(A, "a close of nothing", "DELETE", streams + "/s1", {}, 404);
    await go(A, "a heartbeat of a session another device closed", "PUT", streams + "/s1", {}, 410);
    await go(A, "a close with a bad user", "DELETE", "/api/v2/users/x/streams/s2", {}, 400);
    await go(A, "a close with a body over 16 KiB", "DELETE", streams + "/s2", { headers: json, body: big }, 413);
    await go(A, "GET on a session", "GET", streams + "/s2", {}, 405);

    // Operator limits.
    const limit = "/api/v2/users/8/limit";
    await go(A, "a limit without the token", "PUT", limit, { headers: json, body: '{"maxStreams":5}' }, 401);
    await go(A, "a limit", "PUT", limit, { headers: { ...json, ...auth }, body: '{"maxStreams":5}' }, 200);
    await go(A, "a limit out of bounds", "PUT", limit, { headers: { ...json, ...auth }, body: '{"maxStreams":1001}' }, 400);
    await go(A, "a limit over 16 KiB", "PUT", limit, { headers: { ...json, ...auth }, body: big }, 413);
    await go(A, "a limit cleared", "DELETE", limit, { headers: auth }, 200);
    await go(A, "a limit cleared without the token", "DELETE", limit, {}, 401);
    await go(A, "a limit cleared for a bad id", "DELETE", "/api/v2/users/x/limit", { headers: auth }, 400);
    await go(A, "a limit cleared with a body over 16 KiB", "DELETE", limit, { headers: { ...json, ...auth }, body: big }, 413);
    await go(B, "a limit where no token is configured", "PUT", limit, { headers: json, body: '{"maxStreams":5}' }, 403);
    await go(B, "a limit cleared where no token is configured", "DELETE", limit, {}, 403);
    await go(A, "GET on a limit", "GET", limit, {}, 405);

    // Operations.
    await go(A, "liveness", "GET", "/healthz", {}, 200);
    await go(A, "readiness", "GET", "/readyz", {}, 200);
    await go(A, "metrics", "GET", "/metrics", {}, 200);
    await go(A, "metrics without a body", "HEAD", "/metrics", {}, 200);
    await go(A, "the cluster without the token", "GET", "/api/cluster", {}, 401);
    await go(A, "the cluster", "GET", "/api/cluster", { headers: auth }, 200);
    await go(B, "the cluster where no token is configured", "GET", "/api/cluster", {}, 200);
    await go(A, "the figures without the token", "GET", "/api/cluster/metrics", {}, 401);
    await go(A, "the figures", "GET", "/api/cluster/metrics", { headers: auth }, 200);
    await go(A, "a look-up without the token", "GET", "/api/cluster/users/8", {}, 401);
    await go(A, "a look-up", "GET", "/api/cluster/users/8", { headers: auth }, 200);
    await go(A, "a look-up of a bad id", "GET", "/api/cluster/users/x", { headers: auth }, 400);
    await go(A, "DELETE on the cluster", "DELETE", "/api/cluster", { headers: auth }, 405);

    // The operator page and this description.
    const page = await go(A, "the page", "GET", "/ui/", {}, 200);
    await go(A, "the page again", "GET", "/ui/", { headers: { "If-None-Match": page.headers.etag } }, 304);
    const file = await go(A, "the page by name", "GET", "/ui/index.html", {}, 200);
    await go(A, "the page by name again", "GET", "/ui/index.html", { headers: { "If-None-Match": file.headers.etag } }, 304);
    await go(A, "a file that is not served", "GET", "/ui/nothing.js", {}, 404);
    await go(A, "POST on the page", "POST", "/ui/", {}, 405);
    const doc = await go(A, "the description", "GET", "/api/openapi.json", {}, 200);
    check(doc.body === fs.readFileSync(args.spec, "utf8"), "GET /api/openapi.json is not http/openapi.json byte for byte");
    await go(A, "the description again", "GET", "/api/openapi.json", { headers: { "If-None-Match": doc.headers.etag } }, 304);
    await go(A, "PUT on the description", "PUT", "/api/openapi.json", {}, 405);

    // The preflight of every path, an unknown path, and the edge's own
    // refusals (the `default` answers).
    for (const template of Object.keys(spec.paths)) {
      const path = template.replace(/\{[^}]+\}/g, (p) => p === "{file}" ? "index.html" : "1");
      await go(A, "the preflight", "OPTIONS", path, {}, 204);
    }
    await go(A, "an unknown path", "GET", "/api/nothing", {}, 404);
    await go(A, "a target over 8 KiB", "GET", "/api/startstream/" + "1".repeat(9000), {}, 414);
    await go(A, "a header over 16 KiB", "GET", "/healthz", { headers: { "X-Big": "x".repeat(17 * 1024) } }, 431);

    // The operations port answers the same.
    for (const path of ["/healthz", "/ui/", "/api/openapi.json"]) {
      const res = await request(A.ops, "GET", path);
      check(res.status === 200, "the operations port answered " + res.status + " to GET " + path);
      v.check("on the operations port", "GET", path, res, check);
    }

    // Every documented status was seen, but the 503s: they need an owner
    // that does not answer in time (tests/unit/api_test.cpp and the cluster
    // tier cause them), or a node that is stopping.
    for (const k of v.unseen((path, m, status) => status === "503"))
      check(false, "never exercised: " + k);
    console.log(exchanges.length + " exchanges validated against the description");
  } finally {
    await stopService(withToken);
    if (withoutToken) await stopService(withoutToken);
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const failures = [];
  const check = (ok, what) => { if (!ok) failures.push(what); };
  if (args.mode === "valid") await validMode(args, check);
  else if (args.mode === "routes") routesMode(args, check);
  else if (args.mode === "responses") await responsesMode(args, check);
  else throw new Error("mode must be valid, routes or responses");
  for (const f of failures) console.log("FAILED: " + f);
  console.log(failures.length ? failures.length + " check(s) failed" : "every check passed");
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.log("FAILED: " + (e && e.stack || e));
  process.exit(1);
});
