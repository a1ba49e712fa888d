// Failover benchmark (docs/failover.md), one run, three parts, one table:
//
//  (i)   /client-config under the helper's re-read schedule: CLIENTS (10,000)
//        simulated clients, each reading first at a uniform moment within 1 s,
//        then again after 2 s × 1.5 per read (up to 30 s), each ±50 %, for
//        LOAD_SECS (20) — every client still re-reading (the worst case: nobody
//        told yet). Requests per second the server answered (peak 1 s bucket,
//        mean), latency p50/p99 as the clients saw it (keep-alive, 256 sockets
//        over GENERATORS (2) worker threads; from the request's write to the
//        answer's end; CPU per read),
//        and the server's CPU (utime + stime from /proc/<pid>/stat). The floor:
//        the same schedule (same seed) against nginx answering the service's own
//        answer as a static JSON file, in the same run.
//  (ii)  probe cost per replica: the service's CPU, idle, IDLE_SECS (20) with
//        [failover] on (probing both apps every PROBE_SECS) and with it off.
//  (iii) time to detect: the old app's proxy cut (reset + refuse) or black-holed
//        (held, nothing forwarded) -> the service's /status names a decision,
//        ROUNDS (3) times each, a fresh service each round, the fault at a random
//        moment of the probe cycle.
//
// Each app is reached through its own TCP proxy (e2e/lib.mjs faultProxy) in front
// of one sockudo, as in the e2e failover scenarios; [failover] probe_secs =
// PROBE_SECS (1), fail_after_secs = FAIL_AFTER_SECS (3).
//
//   node bench/failover.mjs   (SERVICE_BIN, default target/release/pusher-dual-auth;
//                              SOCKUDO_BIN; NGINX_BIN; CLIENTS, LOAD_SECS, IDLE_SECS, ROUNDS, PROBE_SECS, FAIL_AFTER_SECS)
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { failoverDecision, faultProxy, freePort, sleep, start, stop, waitForHttp } from '../e2e/lib.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const SERVICE_BIN = process.env.SERVICE_BIN || path.join(root, 'target/release/pusher-dual-auth');
const SOCKUDO_BIN = process.env.SOCKUDO_BIN || 'sockudo';
const NGINX_BIN = process.env.NGINX_BIN || 'nginx';
const CLIENTS = Number(process.env.CLIENTS || 10000);
const LOAD_SECS = Number(process.env.LOAD_SECS || 20);
const IDLE_SECS = Number(process.env.IDLE_SECS || 20);
const ROUNDS = Number(process.env.ROUNDS || 3);
const PROBE_SECS = Number(process.env.PROBE_SECS || 1);
const FAIL_AFTER_SECS = Number(process.env.FAIL_AFTER_SECS || 3);
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dual-auth-bench-failover-'));
const log = fs.createWriteStream(path.join(work, 'processes.log'));
const procs = [];
const APPS = {
  old: { id: '500001', key: 'bench-old-key', secret: 'bench-old-secret' },
  new: { id: '600002', key: 'bench-new-key', secret: 'bench-new-secret' },
};

/** CPU seconds (user + system) a process has used so far. */
function cpuSecs(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ": state is fields[0]; utime is field 14 of the whole line, i.e. fields[11]; stime fields[12].
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}
/** The pids of `pid`'s children (nginx's workers). */
function children(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
const cpuOf = (pids) => pids.reduce((a, p) => a + cpuSecs(p), 0);

function pct(xs, q) {
  if (!xs.length) return NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1))];
}

/** A seeded random (mulberry32): the service and the floor get the same schedule. */
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every read of every client within `secs`: the helper's schedule (docs/failover.md), sorted by time (ms). */
function schedule(clients, secs, seed = 7) {
  const random = seeded(seed);
  const reads = [];
  for (let i = 0; i < clients; i++) {
    let t = random() * 1000;
    let delay = 2000;
    while (t < secs * 1000) {
      reads.push({ t, i });
      t += Math.min(30000, delay) * (0.5 + random());
      delay *= 1.5;
    }
  }
  return reads.sort((a, b) => a.t - b.t);
}

/**
 * One load generator's part of a replay (runs in a worker thread): its reads,
 * each sent at its moment (open loop), over its own keep-alive sockets. Latency
 * is from the request's write on a free socket to the end of the answer (a read
 * waiting for a free socket is the generator's backlog, not the server's latency).
 */
const GENERATOR = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
const { reads, url, t0, sockets } = workerData;
const { hostname, port, pathname } = new URL(url);
// A bare HTTP/1.1 keep-alive client (node:http's parser costs more than the
// servers measured here): one request at a time per socket, answers read by
// Content-Length (chunked answers are read to their 0-length chunk).
const latencies = [];
const done = [];
let errors = 0, late = 0, pending = 0, k = 0, ended = false;
const kinds = {};
const idle = [];
const queue = [];
const finish = () => {
  if (ended || k < reads.length || pending) return;
  ended = true;
  for (const c of all) c.destroy();
  parentPort.postMessage({ latencies, done, errors, late, kinds });
};
const all = [];
function open() {
  const c = net.connect(Number(port), hostname);
  c.setNoDelay(true);
  c.buf = Buffer.alloc(0);
  c.job = null;
  c.on('data', (d) => {
    c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
    for (;;) {
      const head = c.buf.indexOf('\\r\\n\\r\\n');
      if (head < 0 || !c.job) return;
      const text = c.buf.subarray(0, head).toString('latin1');
      const status = Number(text.slice(9, 12));
      const m = /content-length:\\s*(\\d+)/i.exec(text);
      let end;
      if (m) end = head + 4 + Number(m[1]);
      else {
        const z = c.buf.indexOf('\\r\\n0\\r\\n\\r\\n', head);
        if (z < 0) return;
        end = z + 7;
      }
      if (c.buf.length < end) return;
      c.buf = c.buf.subarray(end);
      const job = c.job;
      c.job = null;
      if (status === 200) latencies.push(Number(process.hrtime.bigint() - job.ts) / 1e6); else { errors++; kinds[status] = (kinds[status] || 0) + 1; }
      done.push(Date.now() - t0);
      pending--;
      release(c);
    }
  });
  c.on('error', () => {});
  c.on('close', () => {
    if (c.job) { errors++; kinds.closed = (kinds.closed || 0) + 1; pending--; c.job = null; }
    const i = idle.indexOf(c);
    if (i >= 0) idle.splice(i, 1);
    if (!ended) { const again = open(); release(again); }
  });
  all.push(c);
  return c;
}
function send(c, uid) {
  c.job = { ts: process.hrtime.bigint() };
  c.write('GET ' + pathname + '?uid=' + uid + ' HTTP/1.1\\r\\nHost: ' + hostname + '\\r\\nConnection: keep-alive\\r\\n\\r\\n');
}
function release(c) {
  if (queue.length) send(c, queue.shift());
  else { idle.push(c); finish(); }
}
for (let s = 0; s < sockets; s++) idle.push(open());
const get = (uid) => {
  pending++;
  if (idle.length) send(idle.pop(), uid); else queue.push(uid);
};
const tick = () => {
  const now = Date.now() - t0;
  while (k < reads.length && reads[k].t <= now) {
    if (now - reads[k].t > 100) late++;
    get('bench-' + reads[k++].i);
  }
  if (k < reads.length) setTimeout(tick, Math.max(0, Math.min(10, reads[k].t - (Date.now() - t0))));
  else finish();
};
setTimeout(tick, Math.max(0, t0 - Date.now()));
`;

/**
 * Replays `reads` against `url` (…?uid=…), each at its moment, from GENERATORS
 * (2) worker threads splitting the clients: what was answered, per second and
 * per request, and the CPU `pids` used meanwhile.
 */
async function replay(reads, url, pids) {
  const { Worker } = await import('node:worker_threads');
  const generators = Number(process.env.GENERATORS || 2);
  const t0 = Date.now() + 500; // every generator starts at the same moment
  const parts = Array.from({ length: generators }, (_, g) => reads.filter((r) => r.i % generators === g));
  const cpu0 = cpuOf(pids);
  const results = await Promise.all(parts.map((part) => new Promise((resolve, reject) => {
    const worker = new Worker(GENERATOR, { eval: true, workerData: { reads: part, url, t0, sockets: Math.ceil(256 / generators) } });
    worker.once('message', resolve);
    worker.once('error', reject);
  })));
  const wall = (Date.now() - t0) / 1000;
  const cpu = cpuOf(pids) - cpu0;
  const latencies = results.flatMap((r) => r.latencies);
  const perSecond = new Map();
  for (const r of results) for (const ms of r.done) perSecond.set(Math.floor(ms / 1000), (perSecond.get(Math.floor(ms / 1000)) || 0) + 1);
  return {
    requests: reads.length, errors: results.reduce((a, r) => a + r.errors, 0), late: results.reduce((a, r) => a + r.late, 0),
    kinds: results.reduce((m, r) => { for (const [x, v] of Object.entries(r.kinds)) m[x] = (m[x] || 0) + v; return m; }, {}),
    peak: Math.max(...perSecond.values()), mean: reads.length / wall, wall, p50: pct(latencies, 50), p99: pct(latencies, 99), cpu,
  };
}

function sockudoConfig(port) {
  const apps = Object.values(APPS).map((a) => `
[[app_manager.array.apps]]
id = "${a.id}"
key = "${a.key}"
secret = "${a.secret}"
enabled = true
max_connections = 1000
max_backend_events_per_second = 5000
max_read_requests_per_second = 5000
`).join('');
  return `host = "127.0.0.1"\nport = ${port}\ndebug = false\nshutdown_grace_period = 1\n[adapter]\ndriver = "local"\n[cache]\ndriver = "memory"\n[queue]\ndriver = "memory"\n[metrics]\nenabled = false\n[rate_limiter]\nenabled = false\n[webhooks.batching]\nenabled = false\n[app_manager]\ndriver = "memory"\n${apps}`;
}

function serviceConfig({ port, admin, proxies, failover, hostPort }) {
  const apps = Object.entries(APPS).map(([name, a]) => `
[apps.${name}]
app_id = "${a.id}"
key = "${a.key}"
secret = "${a.secret}"
rest_url = "http://127.0.0.1:${proxies[name]}"
client_options = { wsHost = "127.0.0.1", wsPort = ${proxies[name]}, forceTLS = false, enabledTransports = ["ws"] }
`).join('');
  return `[server]
listen = "127.0.0.1:${port}"
admin_listen = "127.0.0.1:${admin}"
[session_check]
url = "http://127.0.0.1:${hostPort}/check"
[log]
level = "warn"
[status]
old_app = "old"
[rollout]
from = "old"
to = "new"
percent = 0
spread_secs = 3
${failover ? `[failover]\nenabled = true\nprobe_secs = ${PROBE_SECS}\nfail_after_secs = ${FAIL_AFTER_SECS}\n` : ''}${apps}`;
}

/** A service on its own ports (failover on or off), started and ready. */
async function service(name, { proxies, failover, hostPort }) {
  const s = { port: await freePort(), admin: await freePort() };
  s.file = path.join(work, `${name}.toml`);
  fs.writeFileSync(s.file, serviceConfig({ ...s, proxies, failover, hostPort }));
  s.proc = start(SERVICE_BIN, ['serve', '--config', s.file], { log, env: { RUST_LOG: '' } });
  procs.push(s.proc);
  await waitForHttp(`http://127.0.0.1:${s.port}/readyz`);
  s.status = async () => (await fetch(`http://127.0.0.1:${s.admin}/status`)).json();
  s.stop = () => stop(s.proc);
  return s;
}

const rows = [];
const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '–');
let failed = false;
const host = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"user_id":"bench"}');
  });
});
try {
  const hostPort = await freePort();
  await new Promise((r) => host.listen(hostPort, '127.0.0.1', r));
  const wsPort = await freePort();
  fs.writeFileSync(path.join(work, 'sockudo.toml'), sockudoConfig(wsPort));
  procs.push(start(SOCKUDO_BIN, ['--config', path.join(work, 'sockudo.toml')], { cwd: work, log }));
  for (const a of Object.values(APPS)) await waitForHttp(`http://127.0.0.1:${wsPort}/up/${a.id}`);
  const proxy = { old: await faultProxy(wsPort), new: await faultProxy(wsPort) };
  const proxies = { old: proxy.old.port, new: proxy.new.port };
  console.log(`bench failover: ${SERVICE_BIN}, ${os.cpus().length} CPUs, probe_secs ${PROBE_SECS}, fail_after_secs ${FAIL_AFTER_SECS}, work dir ${work}`);

  // (i) /client-config under the re-read schedule, then the floor.
  {
    const reads = schedule(CLIENTS, LOAD_SECS);
    const svc = await service('load', { proxies, failover: true, hostPort });
    await sleep(2000);
    const answer = await (await fetch(`http://127.0.0.1:${svc.port}/client-config?uid=bench-0`)).text();
    const r = await replay(reads, `http://127.0.0.1:${svc.port}/client-config`, [svc.proc.pid]);
    rows.push(['(i) /client-config, service', `${r.requests} reads of ${CLIENTS} clients in ${LOAD_SECS} s`,
      `peak ${r.peak}/s, mean ${fmt(r.mean, 0)}/s`, `p50 ${fmt(r.p50, 2)} ms, p99 ${fmt(r.p99, 2)} ms`,
      `${fmt(r.cpu, 2)} CPU s (${fmt((100 * r.cpu) / r.wall)} % of a core, ${fmt((1e6 * r.cpu) / r.requests, 0)} µs per read)`, `${r.errors} errors${r.errors ? ` ${JSON.stringify(r.kinds)}` : ''}, ${r.late} sent >100 ms late`]);
    await svc.stop();
    // The floor: nginx answering the same body from a file, same schedule.
    const dir = path.join(work, 'nginx-floor');
    fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'client-config.json'), answer);
    fs.chmodSync(work, 0o755); // nginx's worker (not root) reads the file: mkdtemp made the dir 0700
    const nginxPort = await freePort();
    fs.writeFileSync(path.join(dir, 'nginx.conf'), `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
  server {
    listen 127.0.0.1:${nginxPort};
    location = /client-config { default_type application/json; add_header Cache-Control no-store; alias ${dir}/client-config.json; }
  }
}
`);
    const nginx = start(NGINX_BIN, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { log });
    procs.push(nginx);
    await waitForHttp(`http://127.0.0.1:${nginxPort}/client-config`);
    const f = await replay(reads, `http://127.0.0.1:${nginxPort}/client-config`, [nginx.pid, ...children(nginx.pid)]);
    rows.push(['(i) /client-config, floor (nginx, static file)', `${f.requests} reads, same schedule`,
      `peak ${f.peak}/s, mean ${fmt(f.mean, 0)}/s`, `p50 ${fmt(f.p50, 2)} ms, p99 ${fmt(f.p99, 2)} ms`,
      `${fmt(f.cpu, 2)} CPU s (${fmt((100 * f.cpu) / f.wall)} % of a core, ${fmt((1e6 * f.cpu) / f.requests, 0)} µs per read)`, `${f.errors} errors${f.errors ? ` ${JSON.stringify(f.kinds)}` : ''}, ${f.late} sent >100 ms late`]);
    await stop(nginx);
  }

  // (ii) Probe cost: idle CPU with failover on and off.
  for (const on of [true, false]) {
    const svc = await service(`idle-${on ? 'on' : 'off'}`, { proxies, failover: on, hostPort });
    await sleep(2000); // startup, first probes
    const c0 = cpuSecs(svc.proc.pid);
    const t0 = Date.now();
    await sleep(IDLE_SECS * 1000);
    const cpu = cpuSecs(svc.proc.pid) - c0;
    const wall = (Date.now() - t0) / 1000;
    rows.push([`(ii) idle, failover ${on ? 'on' : 'off'}`, `${IDLE_SECS} s${on ? `, probing 2 apps every ${PROBE_SECS} s` : ''}`, '', '',
      `${fmt(cpu * 1000, 0)} CPU ms (${fmt((100 * cpu) / wall, 2)} % of a core)`, '']);
    await svc.stop();
  }

  // (iii) Time to detect: fault -> /status names a decision.
  for (const kind of ['cut', 'blackhole']) {
    const times = [];
    for (let round = 0; round < ROUNDS; round++) {
      const svc = await service(`detect-${kind}-${round}`, { proxies, failover: true, hostPort });
      await sleep(2000 + Math.random() * PROBE_SECS * 1000); // healthy, then a random phase of the probe cycle
      const before = failoverDecision(await svc.status());
      if (before !== null) throw new Error(`a decision before the ${kind}: ${JSON.stringify(before)}`);
      const t0 = Date.now();
      proxy.old[kind]();
      let at = null;
      while (Date.now() - t0 < 60000) {
        const d = failoverDecision(await svc.status());
        if (d) {
          at = Date.now() - t0;
          break;
        }
        await sleep(50);
      }
      await proxy.old.restore();
      await svc.stop();
      times.push(at);
    }
    const ok = times.filter((x) => x !== null);
    rows.push([`(iii) detect, ${kind}`, `${ROUNDS} rounds`, '', `${ok.length ? `min ${fmt(Math.min(...ok) / 1000)} s, max ${fmt(Math.max(...ok) / 1000)} s` : 'never'}`,
      '', `${times.map((x) => (x === null ? 'none in 60 s' : `${fmt(x / 1000)} s`)).join(', ')}`]);
    if (ok.length < times.length) failed = true;
  }
  proxy.old.close();
  proxy.new.close();
} catch (e) {
  failed = true;
  console.log(`bench failed: ${e && e.stack ? e.stack : e}`);
} finally {
  for (const p of procs.reverse()) await stop(p);
  host.close();
  const head = ['part', 'what', 'rate', 'latency / time', 'CPU', 'notes'];
  const widths = head.map((h, k) => Math.max(h.length, ...rows.map((r) => String(r[k]).length)));
  const line = (r) => `| ${r.map((c, k) => String(c).padEnd(widths[k])).join(' | ')} |`;
  console.log([line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n'));
  process.exit(failed ? 1 : 0);
}
