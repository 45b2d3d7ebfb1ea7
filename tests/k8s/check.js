// The checks of the manifests test tier; tests/k8s/run starts one per call
// (`node check.js CHECK`) after installing the tools. Every check prints
// what it compared and, on a mismatch, what differs, then exits 1.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const cp = require('child_process');
const yaml = require('js-yaml');

const src = process.env.K8S_SOURCE;
const tools = process.env.K8S_TOOLS;
const work = process.env.K8S_WORK;
const binary = process.env.VIDEOSTREAMS_BINARY;
const kubectl120 = path.join(tools, 'usr/bin/kubectl');
const promtool = path.join(tools, 'usr/bin/promtool');

// --- reporting --------------------------------------------------------------

const failures = [];
function fail(msg) {
  failures.push(msg);
  console.log('FAIL ' + msg);
}
function ok(msg) {
  console.log('ok   ' + msg);
}
function expect(cond, good, bad) {
  if (cond) ok(good);
  else fail(bad || good);
  return cond;
}
function finish() {
  if (failures.length > 0) {
    console.log(`\n${failures.length} check(s) failed:`);
    for (const f of failures) console.log('  - ' + f);
    process.exit(1);
  }
  console.log('\nall checks passed');
  process.exit(0);
}

// --- processes --------------------------------------------------------------

function run(cmd, args, opts = {}) {
  const r = cp.spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  return r;
}
function runOk(cmd, args, opts = {}) {
  const r = run(cmd, args, opts);
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// Polls `probe` (async, returns a value or throws/returns undefined) until it
// gives a value or `seconds` pass.
async function waitFor(what, seconds, probe) {
  const deadline = Date.now() + seconds * 1000;
  let last = '';
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== null && v !== false) return v;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${seconds} s waiting for ${what}${last ? ': ' + last : ''}`);
    await sleep(200);
  }
}

async function http(method, url, { headers = {}, timeoutMs = 5000 } = {}) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const r = await fetch(url, { method, headers, signal: ctl.signal });
    return { status: r.status, body: await r.text() };
  } finally {
    clearTimeout(t);
  }
}

// --- rendering --------------------------------------------------------------

function overlays() {
  const dir = path.join(src, 'k8s/overlays');
  return fs.readdirSync(dir).filter((d) => fs.existsSync(path.join(dir, d, 'kustomization.yaml'))).sort();
}
function renderWith(kubectl, dir) {
  return runOk(kubectl, ['kustomize', dir]);
}
function parseAll(text) {
  return yaml.loadAll(text).filter((d) => d !== null && d !== undefined);
}
const renderCache = new Map();
function rendered(overlay) {
  if (!renderCache.has(overlay))
    renderCache.set(overlay, parseAll(renderWith(kubectl120, path.join(src, 'k8s/overlays', overlay))));
  return renderCache.get(overlay);
}
const keyOf = (o) => `${o.apiVersion} ${o.kind} ${(o.metadata && o.metadata.namespace) || ''}/${o.metadata && o.metadata.name}`;
const find = (objs, kind, name) => objs.find((o) => o.kind === kind && o.metadata.name === name);

// Differences between two values as "path: a != b" lines.
function diff(a, b, at = '') {
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  if (a && b && typeof a === 'object' && typeof b === 'object' && Array.isArray(a) === Array.isArray(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) => diff(a[k], b[k], `${at}/${k}`));
  }
  return [`${at || '/'}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`];
}
// Same objects, whatever their order, key order or YAML style.
function canonical(v) {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') {
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = canonical(v[k]);
    return out;
  }
  return v;
}

// --- the binary -------------------------------------------------------------

function helpText() {
  return runOk(binary, ['--help']);
}
// Option defaults and variables from --help: {VIDEOSTREAMS_PORT: '8080', ...}.
function helpOptions() {
  const text = helpText();
  const re = /^ {2}--([a-z-]+)=(.*)\n.*\n {6}env (VIDEOSTREAMS_[A-Z_]+)$/gm;
  const out = {};
  let m;
  while ((m = re.exec(text))) out[m[3]] = m[2];
  return { text, vars: out };
}
function seconds(duration) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(duration));
  if (!m) throw new Error(`not a duration: ${duration}`);
  const n = Number(m[1]);
  return { ms: n / 1000, s: n, m: n * 60, h: n * 3600, undefined: n }[m[2]];
}

// --- pods in a render -------------------------------------------------------

function podTemplates(objs) {
  const out = [];
  for (const o of objs) {
    if (o.kind === 'StatefulSet' || o.kind === 'Deployment' || o.kind === 'Job' || o.kind === 'DaemonSet')
      out.push({ owner: o, pod: o.spec.template });
  }
  return out;
}
const allContainers = (pod) => [...(pod.spec.initContainers || []), ...(pod.spec.containers || [])];
const runsOurImage = (c) => /^videostreams(:|$)/.test(c.image.split('/').pop());
function nodeSet(objs) {
  const sts = find(objs, 'StatefulSet', 'videostreams');
  if (!sts) throw new Error('no StatefulSet videostreams');
  const container = sts.spec.template.spec.containers.find((c) => c.name === 'videostreams');
  if (!container) throw new Error('StatefulSet videostreams has no container videostreams');
  return { sts, container };
}
const selects = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);
function portNumber(container, port) {
  if (typeof port === 'number') return port;
  const p = (container.ports || []).find((x) => x.name === port);
  return p ? p.containerPort : undefined;
}

// The environment a container gets in a pod named `podName` at `podIp`
// (ConfigMaps and Secrets from the render, or `secrets` for external ones).
function containerEnv(objs, container, { podName, podIp, secrets }) {
  const env = {};
  const secretValue = (name, key) => {
    if (secrets[name] && key in secrets[name]) return secrets[name][key];
    const s = find(objs, 'Secret', name);
    if (s && s.stringData && key in s.stringData) return s.stringData[key];
    if (s && s.data && key in s.data) return Buffer.from(s.data[key], 'base64').toString();
    throw new Error(`Secret ${name} key ${key}: not in the render and not given`);
  };
  for (const from of container.envFrom || []) {
    if (from.configMapRef) {
      const cm = find(objs, 'ConfigMap', from.configMapRef.name);
      if (!cm) throw new Error(`ConfigMap ${from.configMapRef.name} not in the render`);
      Object.assign(env, cm.data);
    } else if (from.secretRef) {
      const s = find(objs, 'Secret', from.secretRef.name);
      Object.assign(env, (s && s.stringData) || secrets[from.secretRef.name] || {});
    }
  }
  for (const e of container.env || []) {
    if ('value' in e) env[e.name] = e.value;
    else if (e.valueFrom && e.valueFrom.fieldRef) {
      const f = e.valueFrom.fieldRef.fieldPath;
      const values = { 'metadata.name': podName, 'status.podIP': podIp };
      if (!(f in values)) throw new Error(`env ${e.name}: fieldRef ${f} not modelled by this test`);
      env[e.name] = values[f];
    } else if (e.valueFrom && e.valueFrom.secretKeyRef) {
      env[e.name] = secretValue(e.valueFrom.secretKeyRef.name, e.valueFrom.secretKeyRef.key);
    } else if (e.valueFrom && e.valueFrom.configMapKeyRef) {
      const cm = find(objs, 'ConfigMap', e.valueFrom.configMapKeyRef.name);
      env[e.name] = cm.data[e.valueFrom.configMapKeyRef.key];
    } else throw new Error(`env ${e.name}: source not modelled by this test`);
  }
  return env;
}

// The image puts the binary at the ENTRYPOINT's path; here it is the build's.
function localArgv(container) {
  const entry = dockerfile().entrypoint;
  const argv = [...(container.command || entry), ...(container.args || [])];
  if (argv[0] === entry[0]) argv[0] = binary;
  return argv;
}
// A PATH on which `videostreams` is the built binary, as /usr/local/bin is in
// the image.
function binDir() {
  const dir = path.join(work, 'bin');
  fs.mkdirSync(dir, { recursive: true });
  const link = path.join(dir, 'videostreams');
  try { fs.unlinkSync(link); } catch (e) { /* absent */ }
  fs.symlinkSync(binary, link);
  return dir;
}

// --- PostgreSQL -------------------------------------------------------------

function dsn() {
  const file = process.env.VIDEOSTREAMS_TEST_DSN_FILE;
  if (!file || !fs.existsSync(file)) throw new Error('VIDEOSTREAMS_TEST_DSN_FILE: no throwaway PostgreSQL (scripts/test-postgres)');
  return fs.readFileSync(file, 'utf8').trim();
}
// A fresh database on the throwaway server; returns its DSN.
function freshDatabase(name) {
  const base = dsn();
  runOk('psql', [base, '-v', 'ON_ERROR_STOP=1', '-qAtc', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
  runOk('psql', [base, '-v', 'ON_ERROR_STOP=1', '-qAtc', `CREATE DATABASE ${name}`]);
  return base.replace(/dbname=\S+/, `dbname=${name}`);
}

// --- nodes started as the manifests start them ------------------------------

const children = new Set();
process.on('exit', () => { for (const c of children) try { c.kill('SIGKILL'); } catch (e) { /* gone */ } });

function startProcess(name, argv, env) {
  const child = cp.spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const state = { child, name, output: '', exit: null };
  const take = (d) => { state.output += d.toString(); };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  state.exited = new Promise((res) => child.on('exit', (code, signal) => {
    children.delete(child);
    state.exit = { code, signal };
    res(state.exit);
  }));
  return state;
}

// Starts pods `names` of the node StatefulSet at `ips`: the container's
// command, args and environment as the kubelet would give them, plus
// VIDEOSTREAMS_BIND=pod IP (in a pod the node listens on every address; here
// the pods share one loopback).
async function startNodes(objs, { names, ips, database, token }) {
  const { container } = nodeSet(objs);
  const nodes = [];
  for (let i = 0; i < names.length; i++) {
    const podEnv = containerEnv(objs, container, {
      podName: names[i], podIp: ips[i],
      secrets: { videostreams: { DATABASE_URL: database, 'admin-token': token } },
    });
    const env = { PATH: process.env.PATH, ...podEnv, VIDEOSTREAMS_BIND: ips[i] };
    const argv = localArgv(container);
    const node = startProcess(names[i], argv, env);
    node.ip = ips[i];
    node.env = podEnv;
    nodes.push(node);
  }
  return nodes;
}
async function stopNodes(nodes) {
  for (const n of nodes) if (n.exit === null) n.child.kill('SIGKILL');
  await Promise.all(nodes.map((n) => n.exited));
}

// --- checks -----------------------------------------------------------------

async function checkRender() {
  const dirs = ['k8s/base', ...overlays().map((o) => `k8s/overlays/${o}`)];
  expect(overlays().includes('dev') && overlays().includes('production'),
    `overlays: ${overlays().join(', ')}`, `overlays dev and production expected, found: ${overlays().join(', ')}`);
  const version = runOk(kubectl120, ['version', '--client']);
  expect(/v1\.20\./.test(version), `kubectl 1.20 (Debian 12's kubernetes-client): ${version.match(/GitVersion:"([^"]+)"/)[1]}`);
  const first = {};
  for (const dir of dirs) {
    let objs;
    try {
      objs = parseAll(renderWith(kubectl120, path.join(src, dir)));
    } catch (e) {
      fail(`${dir} does not render with kubectl 1.20: ${e.message}`);
      continue;
    }
    first[dir] = objs;
    expect(objs.length > 0, `${dir} renders with kubectl 1.20: ${objs.map((o) => o.kind).join(', ')}`, `${dir} renders nothing`);
  }
  checkDocumentedImageCommands();
  // A second kubectl (a current one, when this machine has one).
  let other = process.env.VIDEOSTREAMS_KUBECTL;
  if (!other) {
    const w = run('sh', ['-c', 'command -v kubectl']);
    other = w.status === 0 ? w.stdout.trim() : '';
  }
  if (!other) {
    console.log('note no other kubectl on PATH: rendered with kubectl 1.20 only');
    return;
  }
  const v = run(other, ['version', '--client']);
  console.log(`note comparing with ${other}: ${(v.stdout + v.stderr).split('\n')[0]}`);
  for (const dir of dirs) {
    if (!first[dir]) continue;
    let objs;
    try {
      objs = parseAll(renderWith(other, path.join(src, dir)));
    } catch (e) {
      fail(`${dir} does not render with ${other}: ${e.message}`);
      continue;
    }
    const a = new Map(first[dir].map((o) => [keyOf(o), canonical(o)]));
    const b = new Map(objs.map((o) => [keyOf(o), canonical(o)]));
    const lines = [];
    for (const k of a.keys()) if (!b.has(k)) lines.push(`${k}: only with kubectl 1.20`);
    for (const k of b.keys()) if (!a.has(k)) lines.push(`${k}: only with ${other}`);
    for (const [k, o] of a) if (b.has(k)) for (const d of diff(o, b.get(k))) lines.push(`${k} ${d}`);
    expect(lines.length === 0, `${dir}: the same ${a.size} objects with kubectl 1.20 and ${other}`,
      `${dir} renders differently with kubectl 1.20 and ${other}:\n    ${lines.join('\n    ')}`);
  }
}

// docs/operations.md points the production overlay at a registry's image
// with `perl -pi` (kustomize edit would rewrite the overlay for a newer
// kustomize than kubectl 1.20's). Runs each such command, as written, on a
// copy of k8s/, one after the other (a deployment, then a rolling update):
// every container of ours must then run that image, and the overlay must
// still render with kubectl 1.20.
function checkDocumentedImageCommands() {
  const doc = fs.readFileSync(path.join(src, 'docs/operations.md'), 'utf8');
  const commands = doc.split('\n').map((l) => l.trim())
    .filter((l) => /^perl -pi .* k8s\/overlays\/production\/kustomization\.yaml$/.test(l));
  if (!expect(commands.length >= 2, `docs/operations.md: ${commands.length} commands set the production image`,
    'docs/operations.md: expected the commands that set the production image (deploy, rolling update)')) return;
  const copy = fs.mkdtempSync(path.join(work, 'k8s-copy-'));
  try {
    fs.cpSync(path.join(src, 'k8s'), path.join(copy, 'k8s'), { recursive: true });
    for (const command of commands) {
      const name = /\|\s+newName: ([^|]+)\|/.exec(command);
      const tag = /newTag: "([^"]+)"/.exec(command);
      if (!name || !tag) { fail(`docs/operations.md: cannot tell the image of: ${command}`); continue; }
      const want = `${name[1]}:${tag[1]}`;
      let objs;
      try {
        runOk('sh', ['-c', command], { cwd: copy });
        objs = parseAll(renderWith(kubectl120, path.join(copy, 'k8s/overlays/production')));
      } catch (e) {
        fail(`\`${command}\`, then rendering production with kubectl 1.20: ${e.message}`);
        continue;
      }
      const images = podTemplates(objs).flatMap(({ pod }) => allContainers(pod))
        .filter(runsOurImage).map((c) => c.image);
      expect(images.length > 0 && images.every((i) => i === want),
        `after the documented command, every container of ours runs ${want}`,
        `after \`${command}\`: images ${images.join(', ')}, expected ${want}`);
    }
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
  }
}

// Validates `obj` against its schema in kubernetes-models, and reports
// fields the schema does not know: the validators read every property they
// know, so a property never read is unknown (a typo the API server would
// drop or refuse).
function schemaErrors(obj) {
  const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : ['core', obj.apiVersion];
  const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);
  const id = `IoK8sApi${cap(group.split('.')[0])}${cap(version)}${obj.kind}`;
  let schema;
  try {
    // By path: the package's "exports" do not list its schemas.
    schema = require(path.join(process.env.NODE_PATH, `kubernetes-models/_schemas/${id}.js`));
  } catch (e) {
    return [`no Kubernetes schema for ${obj.apiVersion} ${obj.kind} (${id})`];
  }
  const records = [];
  const proxies = new WeakMap();
  const wrap = (value, at) => {
    if (!value || typeof value !== 'object') return value;
    if (proxies.has(value)) return proxies.get(value);
    const read = new Set();
    if (!Array.isArray(value)) records.push({ at, value, read });
    const p = new Proxy(value, {
      get(t, k, r) {
        if (typeof k === 'string') read.add(k);
        return wrap(Reflect.get(t, k, r), `${at}/${String(k)}`);
      },
      has(t, k) {
        if (typeof k === 'string') read.add(k);
        return Reflect.has(t, k);
      },
      ownKeys(t) {
        for (const k of Reflect.ownKeys(t)) if (typeof k === 'string') read.add(k);
        return Reflect.ownKeys(t);
      },
    });
    proxies.set(value, p);
    return p;
  };
  const copy = JSON.parse(JSON.stringify(obj));
  const valid = schema.validate(wrap(copy, ''));
  const errors = valid ? [] : (schema.validate.errors || []).map((e) => `${e.instancePath || '/'}: ${e.message || e.keyword} ${JSON.stringify(e.params || {})}`);
  for (const r of records)
    for (const k of Object.keys(r.value)) if (!r.read.has(k)) errors.push(`${r.at}/${k}: unknown field`);
  return errors;
}

function checkPodPolicies(overlay, objs) {
  for (const { owner, pod } of podTemplates(objs)) {
    const where = `${overlay}: ${owner.kind} ${owner.metadata.name}`;
    const ps = pod.spec.securityContext || {};
    const problems = [];
    if (ps.runAsNonRoot !== true) problems.push('pod securityContext.runAsNonRoot is not true');
    if (!(ps.seccompProfile && ps.seccompProfile.type === 'RuntimeDefault')) problems.push('pod seccompProfile is not RuntimeDefault');
    if (pod.spec.automountServiceAccountToken !== false) problems.push('automountServiceAccountToken is not false');
    if (pod.spec.hostNetwork || pod.spec.hostPID || pod.spec.hostIPC) problems.push('uses a host namespace');
    for (const c of allContainers(pod)) {
      const sc = c.securityContext || {};
      if (sc.allowPrivilegeEscalation !== false) problems.push(`${c.name}: allowPrivilegeEscalation is not false`);
      if (sc.readOnlyRootFilesystem !== true) problems.push(`${c.name}: readOnlyRootFilesystem is not true`);
      if (sc.privileged) problems.push(`${c.name}: privileged`);
      if (!(sc.capabilities && (sc.capabilities.drop || []).includes('ALL'))) problems.push(`${c.name}: capabilities do not drop ALL`);
      if ((sc.capabilities && sc.capabilities.add || []).length) problems.push(`${c.name}: adds capabilities`);
      const res = c.resources || {};
      if (!(res.requests && res.requests.cpu && res.requests.memory)) problems.push(`${c.name}: no cpu and memory requests`);
      if (!(res.limits && res.limits.memory)) problems.push(`${c.name}: no memory limit`);
      if (!/:[^/]+$/.test(c.image) || /:latest$/.test(c.image)) problems.push(`${c.name}: image ${c.image} has no fixed tag`);
      if (runsOurImage(c) && pod.spec.enableServiceLinks !== false)
        problems.push(`${c.name}: enableServiceLinks is not false (the kubelet would set VIDEOSTREAMS_PORT=tcp://... for the Service videostreams)`);
      const volumes = new Set([...(pod.spec.volumes || []), ...((owner.spec.volumeClaimTemplates || []).map((v) => v.metadata))].map((v) => v.name));
      for (const m of c.volumeMounts || []) if (!volumes.has(m.name)) problems.push(`${c.name}: mounts unknown volume ${m.name}`);
    }
    expect(problems.length === 0, `${where}: restricted security context, resources, tagged images, volumes`,
      `${where}:\n    ${problems.join('\n    ')}`);
  }
}

function checkReferences(overlay, objs) {
  const external = { production: ['Secret/videostreams'] }[overlay] || [];
  const problems = [];
  const has = (kind, name) => !!find(objs, kind, name) || external.includes(`${kind}/${name}`);
  const pods = podTemplates(objs);
  for (const { owner, pod } of pods) {
    for (const c of allContainers(pod)) {
      for (const f of c.envFrom || []) {
        if (f.configMapRef && !has('ConfigMap', f.configMapRef.name)) problems.push(`${owner.metadata.name}/${c.name}: ConfigMap ${f.configMapRef.name} missing`);
        if (f.secretRef && !has('Secret', f.secretRef.name)) problems.push(`${owner.metadata.name}/${c.name}: Secret ${f.secretRef.name} missing`);
      }
      for (const e of c.env || []) {
        const ref = e.valueFrom && e.valueFrom.secretKeyRef;
        if (!ref) continue;
        const s = find(objs, 'Secret', ref.name);
        if (!has('Secret', ref.name)) problems.push(`${owner.metadata.name}/${c.name}: env ${e.name}: Secret ${ref.name} missing`);
        else if (s && !((s.stringData && ref.key in s.stringData) || (s.data && ref.key in s.data)))
          problems.push(`${owner.metadata.name}/${c.name}: env ${e.name}: Secret ${ref.name} has no key ${ref.key}`);
      }
    }
    if (pod.spec.serviceAccountName && !has('ServiceAccount', pod.spec.serviceAccountName))
      problems.push(`${owner.metadata.name}: ServiceAccount ${pod.spec.serviceAccountName} missing`);
    if (owner.spec.selector && owner.spec.selector.matchLabels && !selects(owner.spec.selector.matchLabels, pod.metadata.labels))
      problems.push(`${owner.kind} ${owner.metadata.name}: its selector does not match its pod labels`);
    if (owner.kind === 'StatefulSet') {
      const svc = find(objs, 'Service', owner.spec.serviceName);
      if (!svc || svc.spec.clusterIP !== 'None') problems.push(`StatefulSet ${owner.metadata.name}: serviceName ${owner.spec.serviceName} is not a headless Service in the render`);
    }
  }
  for (const svc of objs.filter((o) => o.kind === 'Service')) {
    const chosen = pods.filter(({ pod }) => selects(svc.spec.selector, pod.metadata.labels));
    if (chosen.length === 0) { problems.push(`Service ${svc.metadata.name} selects no pods`); continue; }
    for (const { owner, pod } of chosen) {
      if (owner.kind === 'Job') problems.push(`Service ${svc.metadata.name} selects the Job's pods`);
      for (const p of svc.spec.ports) {
        const ok2 = pod.spec.containers.some((c) => portNumber(c, p.targetPort || p.port) !== undefined
          && (typeof p.targetPort !== 'number' || (c.ports || []).some((x) => x.containerPort === p.targetPort)));
        if (!ok2) problems.push(`Service ${svc.metadata.name} port ${p.name}: targetPort ${p.targetPort} is no container port of ${owner.metadata.name}`);
      }
    }
  }
  const { sts } = nodeSet(objs);
  for (const pdb of objs.filter((o) => o.kind === 'PodDisruptionBudget')) {
    if (!selects(pdb.spec.selector.matchLabels, sts.spec.template.metadata.labels)) problems.push(`PodDisruptionBudget ${pdb.metadata.name} does not select the nodes`);
    if (pdb.spec.maxUnavailable !== 1) problems.push(`PodDisruptionBudget ${pdb.metadata.name}: maxUnavailable ${pdb.spec.maxUnavailable}, expected 1`);
  }
  if (!objs.some((o) => o.kind === 'PodDisruptionBudget')) problems.push('no PodDisruptionBudget');
  for (const hpa of objs.filter((o) => o.kind === 'HorizontalPodAutoscaler')) {
    const t = hpa.spec.scaleTargetRef;
    if (!find(objs, t.kind, t.name)) problems.push(`HorizontalPodAutoscaler ${hpa.metadata.name}: target ${t.kind} ${t.name} missing`);
  }
  if (!find(objs, 'Job', 'videostreams-migrate')) problems.push('no migration Job videostreams-migrate');
  const spread = (sts.spec.template.spec.topologySpreadConstraints || []).map((t) => t.topologyKey);
  for (const k of ['kubernetes.io/hostname', 'topology.kubernetes.io/zone'])
    if (!spread.includes(k)) problems.push(`StatefulSet videostreams: no topology spread over ${k}`);
  // What each overlay is for (issue #12).
  if (overlay === 'dev') {
    const pg = objs.find((o) => o.kind === 'StatefulSet' && o.spec.template.spec.containers.some((c) => /^postgres:/.test(c.image)));
    if (!pg || !(pg.spec.volumeClaimTemplates || []).length) problems.push('dev: no PostgreSQL StatefulSet with a volume claim');
    if (pg && pg.spec.replicas !== 1) problems.push('dev: PostgreSQL is not a single instance');
    const secret = find(objs, 'Secret', 'videostreams');
    const host = secret && /@([^:/]+)[:/]/.exec(secret.stringData.DATABASE_URL);
    if (!host || !find(objs, 'Service', host[1])) problems.push(`dev: DATABASE_URL's host ${host && host[1]} is no Service in the render`);
  }
  if (overlay === 'production') {
    if (sts.spec.replicas !== 3) problems.push(`production: ${sts.spec.replicas} replicas, expected 3`);
    const hpa = objs.find((o) => o.kind === 'HorizontalPodAutoscaler');
    if (!hpa || hpa.spec.minReplicas < 3) problems.push('production: no HorizontalPodAutoscaler keeping 3 replicas at least');
    if (find(objs, 'Secret', 'videostreams')) problems.push('production: the Secret must not be in the repository');
  }
  expect(problems.length === 0, `${overlay}: references, selectors, ports, the overlay's purpose`,
    `${overlay}:\n    ${problems.join('\n    ')}`);
}

// The NetworkPolicy, evaluated as the API server would for the node pods:
// players reach the HTTP port from anywhere, the operations port is open to
// the cluster's pods only, and the cluster port (no authentication: it sets
// limits without the admin token) to the other nodes only.
function checkNetworkPolicy(overlay, objs) {
  const problems = [];
  const { sts, container } = nodeSet(objs);
  const nodeLabels = sts.spec.template.metadata.labels;
  const policies = objs.filter((o) => o.kind === 'NetworkPolicy'
    && selects(o.spec.podSelector.matchLabels, nodeLabels)
    && (o.spec.policyTypes || ['Ingress']).includes('Ingress'));
  if (policies.length === 0) problems.push('no NetworkPolicy restricts ingress to the nodes');
  const otherPods = podTemplates(objs).filter(({ owner }) => owner !== sts).map(({ pod }) => pod.metadata.labels);
  // Who a rule's `from` entry lets in.
  const source = (f) => {
    if (f.ipBlock) return 'addresses';
    const pods = f.podSelector && f.podSelector.matchLabels;
    if (f.namespaceSelector) return pods && selects(pods, nodeLabels) && !otherPods.some((l) => selects(pods, l)) ? 'nodes (any namespace)' : 'cluster pods';
    if (!pods) return 'namespace pods';
    return selects(pods, nodeLabels) && !otherPods.some((l) => selects(pods, l)) ? 'nodes' : 'namespace pods';
  };
  const portMatches = (rulePort, cp) => (rulePort.protocol || 'TCP') === (cp.protocol || 'TCP')
    && (rulePort.port === undefined || rulePort.port === cp.name || rulePort.port === cp.containerPort);
  const reach = {};
  for (const cp of container.ports || []) {
    const from = new Set();
    for (const p of policies)
      for (const rule of p.spec.ingress || []) {
        if (rule.ports && rule.ports.length && !rule.ports.some((rp) => portMatches(rp, cp))) continue;
        if (!rule.from || rule.from.length === 0) from.add('anywhere');
        else for (const f of rule.from) from.add(source(f));
      }
    reach[cp.name] = [...from].sort();
  }
  const expected = { http: ['anywhere'], ops: ['cluster pods'], cluster: ['nodes'] };
  for (const [port, want] of Object.entries(expected)) {
    if (!(port in reach)) { problems.push(`the node container has no port ${port}`); continue; }
    if (JSON.stringify(reach[port]) !== JSON.stringify(want))
      problems.push(`port ${port} is open to ${reach[port].join(', ') || 'nobody'}, expected ${want.join(', ')}`);
  }
  for (const port of Object.keys(reach))
    if (!(port in expected)) problems.push(`port ${port}: no expectation in this check (add one)`);
  expect(problems.length === 0,
    `${overlay}: NetworkPolicy: http from anywhere, ops from the cluster's pods, cluster from the nodes only`,
    `${overlay}: NetworkPolicy:\n    ${problems.join('\n    ')}`);
}

// operations.md's procedure for the HorizontalPodAutoscaler ends with
// deleting `replicas` from the production patch; the render must then set
// no replicas at all (the HPA keeps the count). A `replicas` in the base
// would quietly come back and scale the StatefulSet to it on the next apply.
function checkReplicasLeftToTheAutoscaler() {
  const copy = fs.mkdtempSync(path.join(work, 'k8s-copy-'));
  try {
    fs.cpSync(path.join(src, 'k8s'), path.join(copy, 'k8s'), { recursive: true });
    const patch = path.join(copy, 'k8s/overlays/production/statefulset-patch.yaml');
    const before = fs.readFileSync(patch, 'utf8');
    const after = before.replace(/^  replicas: \d+\n/m, '');
    if (!expect(after !== before, 'production: statefulset-patch.yaml sets replicas (a line to delete)')) return;
    fs.writeFileSync(patch, after);
    const { sts } = nodeSet(parseAll(renderWith(kubectl120, path.join(copy, 'k8s/overlays/production'))));
    expect(sts.spec.replicas === undefined,
      'production without the replicas line sets no replicas (the HorizontalPodAutoscaler keeps the count)',
      `production without the replicas line still sets replicas: ${sts.spec.replicas} (from k8s/base?)`);
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
  }
}

async function checkSchema() {
  for (const overlay of overlays()) {
    const objs = rendered(overlay);
    for (const o of objs) {
      const errors = schemaErrors(o);
      expect(errors.length === 0, `${overlay}: ${keyOf(o)} is valid`,
        `${overlay}: ${keyOf(o)} does not validate:\n    ${errors.join('\n    ')}`);
    }
    checkPodPolicies(overlay, objs);
    checkReferences(overlay, objs);
    checkNetworkPolicy(overlay, objs);
  }
  checkReplicasLeftToTheAutoscaler();
}

// Static agreement of the node container with --help and with itself.
function checkNodeSpec(overlay, objs, help) {
  const problems = [];
  const { sts, container } = nodeSet(objs);
  const knownVar = (name) => name in help.vars || (name === 'DATABASE_URL' && /DATABASE_URL/.test(help.text));
  for (const { owner, pod } of podTemplates(objs)) {
    for (const c of allContainers(pod).filter(runsOurImage)) {
      const names = [...(c.env || []).map((e) => e.name)];
      for (const f of c.envFrom || []) {
        const cm = f.configMapRef && find(objs, 'ConfigMap', f.configMapRef.name);
        if (cm) names.push(...Object.keys(cm.data));
      }
      for (const n of names)
        if (!knownVar(n)) problems.push(`${owner.metadata.name}/${c.name} sets ${n}, which videostreams --help does not list`);
    }
  }
  const env = containerEnv(objs, container, { podName: 'p', podIp: 'i', secrets: { videostreams: { DATABASE_URL: 'x', 'admin-token': 'y' } } });
  const value = (v) => (v in env ? env[v] : help.vars[v]);
  const field = (name) => (container.env || []).find((e) => e.name === name);
  const fieldPath = (name) => { const e = field(name); return e && e.valueFrom && e.valueFrom.fieldRef && e.valueFrom.fieldRef.fieldPath; };
  if (fieldPath('VIDEOSTREAMS_NODE_ID') !== 'metadata.name') problems.push('VIDEOSTREAMS_NODE_ID is not the pod name (downward API)');
  if (fieldPath('VIDEOSTREAMS_ADVERTISE_HOST') !== 'status.podIP') problems.push('VIDEOSTREAMS_ADVERTISE_HOST is not the pod IP (downward API)');
  const ports = { http: 'VIDEOSTREAMS_PORT', ops: 'VIDEOSTREAMS_OPS_PORT', cluster: 'VIDEOSTREAMS_CLUSTER_PORT' };
  for (const [name, v] of Object.entries(ports)) {
    const cp2 = (container.ports || []).find((p) => p.name === name);
    if (!cp2) problems.push(`no container port named ${name}`);
    else if (String(cp2.containerPort) !== String(value(v))) problems.push(`container port ${name} is ${cp2.containerPort}, the node listens on ${v}=${value(v)}`);
  }
  const opsPort = Number(value('VIDEOSTREAMS_OPS_PORT'));
  const probes = { readinessProbe: '/readyz', livenessProbe: '/healthz', startupProbe: null };
  for (const [p, want] of Object.entries(probes)) {
    const probe = container[p];
    if (!probe || !probe.httpGet) { problems.push(`no HTTP ${p}`); continue; }
    if (portNumber(container, probe.httpGet.port) !== opsPort) problems.push(`${p} port ${probe.httpGet.port} is not the operations port ${opsPort}`);
    if (want && probe.httpGet.path !== want) problems.push(`${p} path ${probe.httpGet.path}, expected ${want}`);
  }
  const ann = sts.spec.template.metadata.annotations || {};
  if (ann['prometheus.io/port'] !== undefined && Number(ann['prometheus.io/port']) !== opsPort) problems.push(`prometheus.io/port ${ann['prometheus.io/port']} is not the operations port`);
  if (ann['prometheus.io/path'] !== undefined && ann['prometheus.io/path'] !== '/metrics') problems.push(`prometheus.io/path ${ann['prometheus.io/path']}`);
  // SIGTERM budget: preStop pause + hand-off (10 s at most) + HTTP drain
  // (--shutdown-timeout, then --write-timeout for what was cut) + final
  // commit (10 s at most) + cancelling a fold (1 s), README "Leaving".
  const pre = container.lifecycle && container.lifecycle.preStop && container.lifecycle.preStop.exec;
  if (!pre || pre.command[0] !== 'sleep') problems.push('no preStop pause (exec sleep N)');
  else {
    const drain = seconds(value('VIDEOSTREAMS_SHUTDOWN_TIMEOUT')) + seconds(value('VIDEOSTREAMS_WRITE_TIMEOUT'));
    const budget = Number(pre.command[1]) + 10 + drain + 10 + 1;
    const grace = sts.spec.template.spec.terminationGracePeriodSeconds;
    if (!(grace >= budget)) problems.push(`terminationGracePeriodSeconds ${grace} < preStop ${pre.command[1]} s + hand-off 10 s + shutdown and write timeouts ${drain} s + flush 10 s + fold 1 s = ${budget} s`);
  }
  const us = sts.spec.updateStrategy || {};
  if (us.type !== 'RollingUpdate' || !us.rollingUpdate || us.rollingUpdate.maxUnavailable !== 1 || us.rollingUpdate.partition === undefined)
    problems.push('updateStrategy is not RollingUpdate with maxUnavailable 1 and a partition');
  if (!(sts.spec.minReadySeconds > 0)) problems.push('no minReadySeconds');
  expect(problems.length === 0, `${overlay}: env names in --help, downward API, ports, probes, grace period, update strategy`,
    `${overlay}:\n    ${problems.join('\n    ')}`);
}

const readyzOf = async (node, port) => http('GET', `http://${node.ip}:${port}/readyz`);

// Runs what the manifests run: the init container's script, the migration
// Job, two nodes, their probes, the Service's port, a stop.
async function checkLive(overlay, objs) {
  const { sts, container } = nodeSet(objs);
  const token = 'manifests-test-token';
  const database = freshDatabase('manifests_binary');
  const bin = binDir();
  const pathEnv = `${bin}:${process.env.PATH}`;
  // The init container waits while migrations are pending...
  const init = sts.spec.template.spec.initContainers.find((c) => c.name === 'wait-for-schema');
  const initEnv = containerEnv(objs, init, { podName: 'videostreams-0', podIp: '127.0.0.61', secrets: { videostreams: { DATABASE_URL: database } } });
  const initRun = startProcess('wait-for-schema', [...init.command, ...(init.args || [])], { PATH: pathEnv, ...initEnv });
  await sleep(3000);
  expect(initRun.exit === null && /waiting for the Job videostreams-migrate/.test(initRun.output),
    `${overlay}: the init container waits while the schema is not migrated`,
    `${overlay}: the init container did not wait for the migration (exit ${JSON.stringify(initRun.exit)}):\n${initRun.output}`);
  // ... the Job migrates ...
  const job = find(objs, 'Job', 'videostreams-migrate');
  const jc = job.spec.template.spec.containers[0];
  const jobEnv = containerEnv(objs, jc, { podName: 'videostreams-migrate-x', podIp: '127.0.0.60', secrets: { videostreams: { DATABASE_URL: database } } });
  const jr = run(localArgv(jc)[0], localArgv(jc).slice(1), { env: { PATH: pathEnv, ...jobEnv } });
  expect(jr.status === 0 && /applied migration/.test(jr.stdout), `${overlay}: the Job's command (${[...jc.command, ...(jc.args || [])].join(' ')}) migrates: ${jr.stdout.trim().split('\n').join('; ')}`,
    `${overlay}: the Job's command failed (exit ${jr.status}): ${jr.stdout}${jr.stderr}`);
  // ... and then the init container lets the pod start.
  const initExit = await Promise.race([initRun.exited, sleep(30000).then(() => 'timeout')]);
  expect(initExit !== 'timeout' && initExit.code === 0 && /schema up to date/.test(initRun.output),
    `${overlay}: the init container ends (exit 0) once the Job has migrated`,
    `${overlay}: the init container did not end after the migration (${JSON.stringify(initExit)}):\n${initRun.output}`);
  if (initRun.exit === null) initRun.child.kill('SIGKILL');

  const names = ['videostreams-0', 'videostreams-1'];
  const ips = ['127.0.0.61', '127.0.0.62'];
  const nodes = await startNodes(objs, { names, ips, database, token });
  try {
    const port = (name) => portNumber(container, name);
    for (const n of nodes) {
      const line = await waitFor(`${n.name}'s start line`, 60, () => (/listening on .*\n/.exec(n.output) || [])[0]
        || (n.exit && Promise.reject(new Error(`exited ${JSON.stringify(n.exit)}: ${n.output}`))));
      expect(line.includes(`listening on ${n.ip}:${port('http')}, operations on ${n.ip}:${port('ops')}`) && line.includes(`cluster node ${n.name} at ${n.ip}:${port('cluster')}`),
        `${overlay}: ${n.name} listens on the container ports: ${line.trim().slice(0, 160)}`,
        `${overlay}: ${n.name}'s start line does not match the container ports http ${port('http')}, ops ${port('ops')}, cluster ${port('cluster')}: ${line}`);
    }
    for (const [probeName, want] of [['startupProbe', 200], ['readinessProbe', 200], ['livenessProbe', 200]]) {
      const g = container[probeName].httpGet;
      for (const n of nodes) {
        const url = `http://${n.ip}:${portNumber(container, g.port)}${g.path}`;
        try {
          const r = await waitFor(`${probeName} ${url}`, 90, async () => { const x = await http('GET', url); return x.status === want ? x : undefined; });
          ok(`${overlay}: ${n.name} ${probeName} ${g.path} on port ${g.port}: ${r.status} ${r.body.trim()}`);
        } catch (e) {
          fail(`${overlay}: ${n.name} ${probeName} ${url}: ${e.message}\n${n.output}`);
        }
      }
    }
    // Both members see each other at their pod IPs under their pod names.
    try {
      const view = await waitFor('two members up', 60, async () => {
        const r = await http('GET', `http://${ips[0]}:${port('ops')}/api/cluster`, { headers: { Authorization: `Bearer ${token}` } });
        const v = JSON.parse(r.body);
        return v.members && v.members.length === 2 && v.members.every((m) => m.status === 'up') ? v : undefined;
      });
      const seen = view.members.map((m) => `${m.nodeId}@${m.advertiseHost}:${m.clusterPort}`).sort();
      const want = names.map((n, i) => `${n}@${ips[i]}:${port('cluster')}`);
      expect(JSON.stringify(seen) === JSON.stringify(want), `${overlay}: members ${seen.join(', ')} (node id = pod name, advertised at the pod IP)`,
        `${overlay}: members ${seen.join(', ')}, expected ${want.join(', ')}`);
    } catch (e) {
      fail(`${overlay}: the two nodes did not form a cluster: ${e.message}`);
    }
    // The players' Service port reaches the API on every node.
    const svc = find(objs, 'Service', 'videostreams');
    const target = portNumber(container, svc.spec.ports[0].targetPort);
    for (let user = 1; user <= 6; user++) {
      const n = nodes[user % 2];
      const r = await http('GET', `http://${n.ip}:${target}/api/startstream/${user}`);
      if (r.status !== 200) fail(`${overlay}: GET /api/startstream/${user} on ${n.name} via the Service's target port ${target}: ${r.status} ${r.body}`);
    }
    ok(`${overlay}: the Service's target port ${svc.spec.ports[0].targetPort} (${target}) answers /api/startstream on both nodes`);
    // The preStop hook's command exists and ends; then SIGTERM ends the node
    // within the rest of the grace period, turning unready first.
    const pre = container.lifecycle.preStop.exec.command;
    const t0 = Date.now();
    const pr = run(pre[0], pre.slice(1));
    const preSeconds = (Date.now() - t0) / 1000;
    expect(pr.status === 0, `${overlay}: preStop ${pre.join(' ')} runs (${preSeconds.toFixed(1)} s)`, `${overlay}: preStop ${pre.join(' ')} failed: ${pr.stderr}`);
    const grace = sts.spec.template.spec.terminationGracePeriodSeconds;
    const leaving = nodes[1];
    const t1 = Date.now();
    leaving.child.kill('SIGTERM');
    let sawStopping = false;
    const poll = (async () => {
      while (leaving.exit === null) {
        try { const r = await readyzOf(leaving, port('ops')); if (r.status === 503) sawStopping = true; } catch (e) { /* closed */ }
        await sleep(100);
      }
    })();
    const exit = await Promise.race([leaving.exited, sleep((grace - preSeconds) * 1000).then(() => 'timeout')]);
    await poll;
    const took = (Date.now() - t1) / 1000;
    expect(exit !== 'timeout' && exit.code === 0,
      `${overlay}: ${leaving.name} exits 0 ${took.toFixed(1)} s after SIGTERM (grace ${grace} s - preStop ${preSeconds.toFixed(1)} s)`,
      `${overlay}: ${leaving.name} did not exit 0 within the grace period after SIGTERM: ${JSON.stringify(exit)}\n${leaving.output}`);
    expect(sawStopping, `${overlay}: ${leaving.name}'s readiness turned 503 while it stopped`, `${overlay}: ${leaving.name} never answered /readyz 503 while stopping`);
    const r = await waitFor('the remaining node to serve every shard', 60, async () => {
      const x = await http('GET', `http://${ips[0]}:${port('ops')}/api/cluster`, { headers: { Authorization: `Bearer ${token}` } });
      const v = JSON.parse(x.body);
      return v.shards.every((s) => s.owner === names[0] && s.state === 'serving') ? v : undefined;
    }).catch((e) => fail(`${overlay}: ${e.message}`));
    if (r) ok(`${overlay}: ${names[0]} serves all ${r.shardCount} shards after ${names[1]} left`);
  } finally {
    await stopNodes(nodes);
  }
}

async function checkBinary() {
  const help = helpOptions();
  expect(Object.keys(help.vars).length > 10, `--help lists ${Object.keys(help.vars).length} variables`);
  const seen = new Map();
  for (const overlay of overlays()) {
    const objs = rendered(overlay);
    checkNodeSpec(overlay, objs, help);
    // The same pod spec (resources and image tag aside) needs one live run.
    const { sts } = nodeSet(objs);
    const spec = JSON.parse(JSON.stringify(sts.spec.template.spec));
    for (const c of allContainers({ spec })) { delete c.resources; delete c.image; }
    const key = JSON.stringify([spec, find(objs, 'ConfigMap', 'videostreams'), find(objs, 'Job', 'videostreams-migrate').spec.template.spec.containers.map((c) => [c.command, c.args, c.env])]);
    if (seen.has(key)) {
      ok(`${overlay}: pod spec (resources and image tag aside), ConfigMap and Job as in ${seen.get(key)}: run there`);
      continue;
    }
    seen.set(key, overlay);
    await checkLive(overlay, objs);
  }
}

// --- Dockerfile -------------------------------------------------------------

let dockerfileCache;
function dockerfile() {
  if (dockerfileCache) return dockerfileCache;
  const text = fs.readFileSync(path.join(src, 'Dockerfile'), 'utf8');
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stages = [];
  for (const l of lines) {
    const m = /^(\w+)\s+(.*)$/.exec(l);
    const ins = m[1].toUpperCase();
    const arg = m[2].replace(/\s+#.*$/, '');
    if (ins === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(arg);
      stages.push({ from: f[1], name: f[2] || String(stages.length), ins: [] });
    } else stages[stages.length - 1].ins.push({ ins, arg });
  }
  const final = stages[stages.length - 1];
  const of = (ins) => final.ins.filter((i) => i.ins === ins);
  const entry = of('ENTRYPOINT').pop();
  dockerfileCache = {
    stages, final,
    entrypoint: entry ? JSON.parse(entry.arg) : null,
    user: (of('USER').pop() || {}).arg,
    expose: of('EXPOSE').flatMap((i) => i.arg.split(/\s+/)).map((p) => Number(p.replace(/\/tcp$/, ''))),
    installs: of('RUN').flatMap((i) => {
      const m = /apt-get\s+install\s+(.*?)(?:&&|;|$)/.exec(i.arg);
      return m ? m[1].split(/\s+/).filter((t) => t && !t.startsWith('-')) : [];
    }),
    copies: of('COPY').map((i) => i.arg),
    runs: (stage) => stage.ins.filter((i) => i.ins === 'RUN').map((i) => i.arg),
  };
  return dockerfileCache;
}

// The package that owns each file (dpkg -S, in one call: it reads every
// package's file list). Debian 12 has /lib -> /usr/lib, and dpkg knows each
// file under one of the two names.
function dpkgOwners(files) {
  const candidates = new Map();
  for (const file of files) {
    const names = [file, fs.realpathSync(file)];
    for (const f of [...names]) {
      if (f.startsWith('/lib')) names.push('/usr' + f);
      if (f.startsWith('/usr/lib')) names.push(f.slice(4));
    }
    candidates.set(file, [...new Set(names)]);
  }
  const r = run('dpkg', ['-S', ...new Set([...candidates.values()].flat())]);
  const owner = new Map();
  for (const line of r.stdout.split('\n')) {
    const m = /^([^:]+(?::[a-z0-9]+)?(?:, [^:]+(?::[a-z0-9]+)?)*): (\/.*)$/.exec(line);
    if (m) owner.set(m[2], m[1].split(', ')[0].split(':')[0]);
  }
  return new Map(files.map((f) => [f, candidates.get(f).map((c) => owner.get(c)).find(Boolean) || null]));
}
// The packages `roots` bring with them (Depends, Pre-Depends), as installed
// on this machine, which builds the binary from the same Debian release.
function dependencyClosure(roots) {
  const installed = new Map();
  const provides = new Map();
  const out = runOk('dpkg-query', ['-W', '-f=${Package}\t${Status}\t${Depends}, ${Pre-Depends}\t${Provides}\n']);
  for (const line of out.split('\n').filter(Boolean)) {
    const [name, status, deps, prov] = line.split('\t');
    if (!status.includes('install ok installed')) continue;
    installed.set(name, deps);
    for (const v of (prov || '').split(',').map((x) => x.trim().split(/[\s(]/)[0]).filter(Boolean)) provides.set(v, name);
  }
  const seen = new Set();
  const todo = [...roots];
  while (todo.length) {
    const p = todo.pop();
    if (seen.has(p)) continue;
    seen.add(p);
    for (const dep of (installed.get(p) || '').split(',').map((x) => x.trim()).filter(Boolean)) {
      const alternatives = dep.split('|').map((a) => a.trim().split(/[\s:(]/)[0]);
      const chosen = alternatives.find((a) => installed.has(a)) || alternatives.map((a) => provides.get(a)).find(Boolean);
      todo.push(chosen || alternatives[0]);
    }
  }
  return seen;
}

async function checkImage() {
  const d = dockerfile();
  const problems = [];
  const [first, final] = [d.stages[0], d.final];
  expect(/^debian:(12|bookworm)(-slim)?$/.test(final.from) && d.stages.every((s) => /^debian:(12|bookworm)/.test(s.from)),
    `stages on Debian 12: ${d.stages.map((s) => `${s.name}=${s.from}`).join(', ')}`, `every stage must be Debian 12: ${d.stages.map((s) => s.from).join(', ')}`);
  expect(d.stages.length >= 2 && d.runs(first).some((r) => /^scripts\/dev build$/.test(r.trim())),
    'the build stage runs scripts/dev build (the same commands as scripts/dev)', `the build stage does not run scripts/dev build: ${d.runs(first).join(' | ')}`);
  const devScript = fs.readFileSync(path.join(src, 'scripts/dev'), 'utf8');
  expect(/\n\s*build\)\n\s*install_packages "\$\{BUILD_PACKAGES\[@\]\}"\n\s*build\n/.test(devScript),
    'scripts/dev build installs BUILD_PACKAGES and runs the same build() as scripts/dev test', 'scripts/dev has no build subcommand running build()');
  // Libraries.
  const ldd = runOk('ldd', [binary]);
  const libs = ldd.split('\n').map((l) => (/=>\s+(\S+)/.exec(l) || /^\s*(\/\S+)/.exec(l) || [])[1]).filter((f) => f && f.startsWith('/'));
  const owners = new Map();
  for (const [lib, p] of dpkgOwners(libs)) {
    if (!p) problems.push(`${lib}: no Debian package owns it (dpkg -S)`);
    else owners.set(lib, p);
  }
  const closure = dependencyClosure(d.installs);
  for (const [lib, p] of owners) if (!closure.has(p)) problems.push(`${path.basename(lib)} (package ${p}) is not installed by the runtime stage (apt-get install ${d.installs.join(' ')})`);
  const needed = new Set(owners.values());
  for (const p of d.installs) if (!needed.has(p)) problems.push(`the runtime stage installs ${p}, which owns no library the binary links`);
  expect(problems.length === 0, `every one of ${libs.length} libraries ldd lists comes from the runtime stage's ${d.installs.length} packages or their dependencies (${closure.size} packages), and each of those owns one`,
    `libraries:\n    ${problems.join('\n    ')}`);
  const compilers = [...closure].filter((p) => /^(gcc|g\+\+|cpp|clang|llvm|cmake|make|build-essential|binutils|libc6-dev)(-\d+)?$|-dev$/.test(p));
  expect(compilers.length === 0, 'no compiler, build tool or -dev package in the runtime stage', `the runtime stage installs build tools: ${compilers.join(', ')}`);
  const fromBuild = d.copies.filter((c) => /--from=/.test(c));
  expect(fromBuild.length === 1 && /\/build\/videostreams\s+\/usr\/local\/bin\/videostreams$/.test(fromBuild[0]) && d.copies.length === 1,
    `the runtime stage copies the binary only: COPY ${fromBuild[0]}`, `the runtime stage copies more than the binary: ${d.copies.join(' | ')}`);
  // User, entrypoint, ports against the manifests.
  const [uid, gid] = String(d.user || '').split(':').map(Number);
  expect(Number.isInteger(uid) && uid > 0 && (gid === undefined || (Number.isInteger(gid) && gid > 0)), `USER ${d.user}: numeric, not root`, `USER ${d.user} must be a numeric non-root uid[:gid] (runAsNonRoot needs a number)`);
  expect(d.runs(final).some((r) => new RegExp(`useradd .*--uid ${uid}\\b`).test(r)), `the runtime stage creates user ${uid}`, `no useradd --uid ${uid} in the runtime stage`);
  for (const overlay of overlays()) {
    const objs = rendered(overlay);
    const mism = [];
    for (const { owner, pod } of podTemplates(objs)) {
      for (const c of allContainers(pod).filter(runsOurImage)) {
        const sc = { ...(pod.spec.securityContext || {}), ...(c.securityContext || {}) };
        if (sc.runAsUser !== uid) mism.push(`${owner.metadata.name}/${c.name}: runAsUser ${sc.runAsUser} != USER ${uid}`);
        if (gid !== undefined && sc.runAsGroup !== gid) mism.push(`${owner.metadata.name}/${c.name}: runAsGroup ${sc.runAsGroup} != ${gid}`);
        if (c.command && !/^\/bin\/sh$/.test(c.command[0]) && JSON.stringify(c.command) !== JSON.stringify(d.entrypoint))
          mism.push(`${owner.metadata.name}/${c.name}: command ${JSON.stringify(c.command)} != ENTRYPOINT ${JSON.stringify(d.entrypoint)}`);
        // A shell script calls the binary by name: on the image's PATH
        // (the container runtime's default), that must be the ENTRYPOINT.
        const defaultPath = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
        if (c.command && c.command[0] === '/bin/sh'
            && !(/(^|[\s($`])videostreams\s/.test(c.command.join(' ')) && d.entrypoint
                 && path.basename(d.entrypoint[0]) === 'videostreams' && defaultPath.includes(path.dirname(d.entrypoint[0]))))
          mism.push(`${owner.metadata.name}/${c.name}: a shell command that does not run videostreams from the default PATH`);
      }
    }
    const { container } = nodeSet(objs);
    const ports = (container.ports || []).map((p) => p.containerPort).sort();
    if (JSON.stringify(ports) !== JSON.stringify([...d.expose].sort())) mism.push(`container ports ${ports.join(' ')} != EXPOSE ${d.expose.join(' ')}`);
    if (!d.entrypoint || !(container.command && JSON.stringify(container.command) === JSON.stringify(d.entrypoint)))
      mism.push(`the node container's command ${JSON.stringify(container.command)} is not the ENTRYPOINT ${JSON.stringify(d.entrypoint)}`);
    expect(mism.length === 0, `${overlay}: runAsUser/runAsGroup = USER, command = ENTRYPOINT ${JSON.stringify(d.entrypoint)}, container ports = EXPOSE ${d.expose.join(' ')}`,
      `${overlay}: the manifests and the Dockerfile disagree:\n    ${mism.join('\n    ')}`);
  }
  const ignore = fs.readFileSync(path.join(src, '.dockerignore'), 'utf8');
  expect(/^build$/m.test(ignore) && /^\.git$/m.test(ignore), '.dockerignore keeps build trees and .git out of the context', '.dockerignore must list build and .git');
}

// --- monitoring -------------------------------------------------------------

// Metric names, label matchers and grouping labels of a PromQL expression.
const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile', 'limitk', 'limit_ratio']);
const GROUPING = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2', 'inf', 'nan']);
function promqlParts(expr) {
  const metrics = [];
  const grouping = [];
  let i = 0;
  const skipString = () => { const q = expr[i++]; while (i < expr.length && expr[i] !== q) i += expr[i] === '\\' ? 2 : 1; i++; };
  const ident = () => { const m = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(expr.slice(i)); i += m[0].length; return m[0]; };
  const spaces = () => { while (/\s/.test(expr[i] || '')) i++; };
  const labelList = () => {
    spaces();
    if (expr[i] !== '(') return [];
    const end = expr.indexOf(')', i);
    const list = expr.slice(i + 1, end).split(',').map((s) => s.trim()).filter(Boolean);
    i = end + 1;
    return list;
  };
  const matchers = () => {
    const labels = [];
    i++; // {
    for (;;) {
      spaces();
      if (expr[i] === '}') { i++; return labels; }
      if (expr[i] === ',') { i++; continue; }
      if (/[a-zA-Z_]/.test(expr[i])) labels.push(ident());
      else if (expr[i] === '"' || expr[i] === "'" || expr[i] === '`') skipString();
      else i++;
    }
  };
  while (i < expr.length) {
    const c = expr[i];
    if (c === '"' || c === "'" || c === '`') skipString();
    else if (c === '[') i = expr.indexOf(']', i) + 1;
    else if (c === '{') metrics.push({ name: null, labels: matchers() });
    else if (/[0-9.]/.test(c)) { const m = /^[0-9.]+[a-zA-Z0-9.+-]*/.exec(expr.slice(i)); i += m[0].length; }
    else if (/[a-zA-Z_:]/.test(c)) {
      const word = ident();
      spaces();
      if (GROUPING.has(word)) grouping.push(...labelList());
      else if (expr[i] === '(' || AGGREGATIONS.has(word) || KEYWORDS.has(word.toLowerCase())) { /* a function or operator */ }
      else metrics.push({ name: word, labels: expr[i] === '{' ? matchers() : [] });
    } else i++;
  }
  return { metrics: metrics.filter((m) => m.name), grouping };
}

function alertRules() {
  const doc = yaml.load(fs.readFileSync(path.join(src, 'k8s/monitoring/alerts.yaml'), 'utf8'));
  return doc.groups.flatMap((g) => g.rules).filter((r) => r.alert);
}
// Every query of the dashboard, with Grafana's variables given values.
function dashboardQueries() {
  const dash = JSON.parse(fs.readFileSync(path.join(src, 'k8s/monitoring/grafana-dashboard.json'), 'utf8'));
  const out = [];
  const walk = (panels) => {
    for (const p of panels || []) {
      for (const t of p.targets || []) out.push({ where: `panel ${p.id} "${p.title}" ${t.refId}`, expr: t.expr });
      walk(p.panels);
    }
  };
  walk(dash.panels);
  for (const v of (dash.templating && dash.templating.list) || []) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : v.query.query;
    const m = /^label_values\((.*),\s*([a-zA-Z_]+)\)$/.exec(q);
    out.push({ where: `variable ${v.name}`, expr: m ? m[1] : q, label: m && m[2] });
  }
  const grafana = (e) => e.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m').replace(/\$\{?[a-zA-Z_]+\}?/g, '.*');
  return { dash, queries: out.map((q) => ({ ...q, expr: grafana(q.expr) })) };
}
function anchor(heading) {
  return heading.trim().toLowerCase().replace(/[^a-z0-9 _-]/g, '').replace(/ /g, '-');
}

async function checkRules() {
  const rulesFile = path.join(src, 'k8s/monitoring/alerts.yaml');
  let r = run(promtool, ['check', 'rules', rulesFile]);
  expect(r.status === 0, `promtool check rules k8s/monitoring/alerts.yaml: ${(r.stdout + r.stderr).trim().split('\n').pop().trim()}`, `promtool check rules:\n${r.stdout}${r.stderr}`);
  r = run(promtool, ['test', 'rules', path.join(src, 'tests/k8s/alerts_test.yaml')]);
  expect(r.status === 0, 'promtool test rules tests/k8s/alerts_test.yaml: every alert fires when it should, and only then', `promtool test rules:\n${r.stdout}${r.stderr}`);
  const rules = alertRules();
  const names = rules.map((x) => x.alert);
  const required = ['VideostreamsNodeDown', 'VideostreamsShardsUnowned', 'VideostreamsDatabaseUnreachable', 'VideostreamsPersistenceBacklogGrowing', 'VideostreamsLatencyP99High', 'VideostreamsGrantFailures'];
  const missing = required.filter((n) => !names.includes(n));
  expect(missing.length === 0, `alerts: ${names.join(', ')}`, `alerts missing: ${missing.join(', ')}`);
  // Every alert has a runbook entry in docs/operations.md, and its tests.
  const ops = path.join(src, 'docs/operations.md');
  const anchors = fs.existsSync(ops) ? new Set((fs.readFileSync(ops, 'utf8').match(/^#+ .*$/gm) || []).map((h) => anchor(h.replace(/^#+ /, '')))) : new Set();
  const testText = fs.readFileSync(path.join(src, 'tests/k8s/alerts_test.yaml'), 'utf8');
  for (const rule of rules) {
    const rb = (rule.annotations || {}).runbook || '';
    const m = /^docs\/operations\.md#(.+)$/.exec(rb);
    expect(m && anchors.has(m[1]) && m[1] === rule.alert.toLowerCase() && rule.labels && rule.labels.severity && rule.annotations.summary,
      `${rule.alert}: severity ${rule.labels && rule.labels.severity}, summary, runbook ${rb} found`,
      `${rule.alert}: needs a severity, a summary and a runbook docs/operations.md#${rule.alert.toLowerCase()} that docs/operations.md has as a heading (runbook: ${rb})`);
    expect(new RegExp(`alertname: ${rule.alert}\\n\\s*exp_alerts:\\n\\s*- `).test(testText), `${rule.alert}: alerts_test.yaml makes it fire`, `${rule.alert}: no test in tests/k8s/alerts_test.yaml where it fires`);
  }
  // The shard threshold is the ConfigMap's shard count.
  const cm = find(parseAll(renderWith(kubectl120, path.join(src, 'k8s/base'))), 'ConfigMap', 'videostreams');
  const unowned = rules.find((x) => x.alert === 'VideostreamsShardsUnowned');
  const threshold = unowned && /<\s*(\d+)/.exec(unowned.expr);
  expect(threshold && threshold[1] === cm.data.VIDEOSTREAMS_SHARDS, `VideostreamsShardsUnowned compares with ${threshold && threshold[1]} = VIDEOSTREAMS_SHARDS of the ConfigMap`,
    `VideostreamsShardsUnowned compares with ${threshold && threshold[1]}, the ConfigMap has VIDEOSTREAMS_SHARDS=${cm.data.VIDEOSTREAMS_SHARDS}`);
  // The dashboard: well formed, and every query is valid PromQL (promtool
  // checks them as recording rules).
  const { dash, queries } = dashboardQueries();
  const ids = [];
  const walk = (ps) => { for (const p of ps || []) { ids.push(p.id); walk(p.panels); } };
  walk(dash.panels);
  expect(new Set(ids).size === ids.length && ids.every((x) => Number.isInteger(x)), `dashboard "${dash.title}": ${ids.length} panels with unique ids`, `dashboard panel ids are not unique integers: ${ids.join(',')}`);
  const bad = [];
  const walk2 = (ps) => { for (const p of ps || []) { if (p.type !== 'row' && (!p.targets || !p.targets.length || p.targets.some((t) => !t.expr))) bad.push(`panel ${p.id} "${p.title}" has no query`); if (p.type !== 'row' && !(p.datasource && p.datasource.uid === '${datasource}')) bad.push(`panel ${p.id}: datasource is not \${datasource}`); walk2(p.panels); } };
  walk2(dash.panels);
  expect(bad.length === 0, 'every panel queries the dashboard\'s data source variable', bad.join('\n    '));
  const recordFile = path.join(work, 'dashboard-queries.rules.yaml');
  const groups = [{ name: 'dashboard', rules: queries.map((q, n) => ({ record: `dashboard:query_${n}`, expr: q.expr })) }];
  fs.writeFileSync(recordFile, yaml.dump({ groups }));
  r = run(promtool, ['check', 'rules', recordFile]);
  // promtool numbers the rules from 1: name the queries it refuses.
  const refused = [...(r.stdout + r.stderr).matchAll(/rule (\d+)/g)].map((m) => queries[Number(m[1]) - 1]).filter(Boolean);
  expect(r.status === 0, `promtool accepts all ${queries.length} dashboard queries`,
    `promtool refuses dashboard queries:\n${refused.map((q) => `    ${q.where}: ${q.expr}`).join('\n')}\n${r.stdout}${r.stderr}`);
}

// Series exposed by a /metrics text: name -> set of label names seen.
function parseExposition(text, into) {
  for (const line of text.split('\n')) {
    let m = /^# TYPE (\S+) (\S+)/.exec(line);
    if (m) {
      const suffixes = { histogram: ['_bucket', '_sum', '_count'], summary: ['', '_sum', '_count'] }[m[2]] || [''];
      for (const s of suffixes) if (!into.has(m[1] + s)) into.set(m[1] + s, { samples: 0, labels: new Set() });
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+/.exec(line);
    if (!m) continue;
    const e = into.get(m[1]) || { samples: 0, labels: new Set() };
    e.samples++;
    for (const l of (m[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) e.labels.add(l[1]);
    into.set(m[1], e);
  }
}

async function checkMetricNames() {
  const objs = rendered('dev');
  const { container } = nodeSet(objs);
  const database = freshDatabase('manifests_metrics');
  runOk(binary, ['db', 'migrate', `--database-url=${database}`]);
  const names = ['videostreams-0', 'videostreams-1'];
  const ips = ['127.0.0.63', '127.0.0.64'];
  const token = 'manifests-test-token';
  const nodes = await startNodes(objs, { names, ips, database, token });
  const ops = portNumber(container, 'ops');
  const api = portNumber(container, 'http');
  const exposed = new Map();
  try {
    await waitFor('both nodes ready, sharing the shards', 90, async () => {
      for (const n of nodes) {
        if (n.exit) throw new Error(`${n.name} exited ${JSON.stringify(n.exit)}: ${n.output}`);
        if ((await http('GET', `http://${n.ip}:${ops}/readyz`)).status !== 200) return undefined;
      }
      const v = JSON.parse((await http('GET', `http://${ips[0]}:${ops}/api/cluster`, { headers: { Authorization: `Bearer ${token}` } })).body);
      return v.members.length === 2 && v.members.every((m) => m.shards > 0) ? v : undefined;
    });
    // Traffic on both APIs through one node, so that requests are forwarded
    // to the other and every family has samples.
    for (let user = 1; user <= 40; user++) {
      await http('GET', `http://${ips[0]}:${api}/api/startstream/${user}`);
      await http('POST', `http://${ips[0]}:${api}/api/v2/users/${user}/streams`);
      await http('GET', `http://${ips[1]}:${api}/api/endstream/${user}`);
    }
    for (const n of nodes) parseExposition((await http('GET', `http://${n.ip}:${ops}/metrics`)).body, exposed);
  } finally {
    await stopNodes(nodes);
  }
  ok(`scraped ${[...exposed.keys()].filter((k) => exposed.get(k).samples > 0).length} series names with samples from two nodes with PostgreSQL`);
  // `up` is made by Prometheus for every target, with job and instance;
  // Prometheus adds job and instance to every series it scrapes.
  const generated = new Map([['up', new Set()]]);
  const targetLabels = new Set(['job', 'instance']);
  const uses = [
    ...alertRules().map((rule) => ({ where: `alerts.yaml ${rule.alert}`, expr: rule.expr })),
    ...dashboardQueries().queries.map((q) => ({ where: `dashboard ${q.where}`, expr: q.expr, label: q.label })),
  ];
  let count = 0;
  for (const u of uses) {
    const { metrics, grouping } = promqlParts(u.expr);
    const problems = [];
    const labelsHere = new Set([...targetLabels]);
    for (const m of metrics) {
      count++;
      if (generated.has(m.name)) continue;
      const e = exposed.get(m.name);
      if (!e) { problems.push(`${m.name}: /metrics has no such series`); continue; }
      if (e.samples === 0) { problems.push(`${m.name}: declared, but no sample after traffic`); continue; }
      for (const l of e.labels) labelsHere.add(l);
      for (const l of m.labels) if (!targetLabels.has(l) && !e.labels.has(l)) problems.push(`${m.name}{${l}}: no such label on /metrics (labels: ${[...e.labels].join(', ') || 'none'})`);
    }
    for (const l of [...grouping, ...(u.label ? [u.label] : [])]) if (!labelsHere.has(l)) problems.push(`by/label ${l}: no metric of this query has it`);
    expect(problems.length === 0, `${u.where}: ${metrics.map((m) => m.name).join(', ')}`, `${u.where} (${u.expr.replace(/\s+/g, ' ')}):\n    ${problems.join('\n    ')}`);
  }
  expect(count > 0, `${count} metric references checked`, 'no metric references found');
}

// --- main -------------------------------------------------------------------

const checks = {
  render: checkRender,
  schema: checkSchema,
  binary: checkBinary,
  image: checkImage,
  rules: checkRules,
  'metric-names': checkMetricNames,
};
const which = process.argv[2];
if (!checks[which]) {
  console.error(`check.js: unknown check ${which}; one of ${Object.keys(checks).join(', ')}`);
  process.exit(2);
}
checks[which]().then(finish, (e) => {
  fail(e.stack || e.message);
  finish();
});
