// Failover benchmark (docs/failover.md), one run, three parts, one table:
//
//  (i)   /client-config under the helper's re-read schedule: CLIENTS (10,000)
//        simulated clients, each reading first at a uniform moment within 1 s,
//        then again after 2 s × 1.5 per read (up to 30 s), each ±50 %, for
//        LOAD_SECS (20) — every client still re-reading (the worst case: nobody
//        told yet). Requests per second the server answered (peak 1 s bucket,
//        mean), latency p50/p99 as the clients saw it (keep-alive, 256 sockets),
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

/** Replays `reads` against `url` (…?uid=…), each at its moment: what was answered, per second and per request. */
async function replay(reads, url, pids) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const latencies = [];
  const perSecond = new Map();
  let errors = 0;
  let late = 0;
  const get = (uid) => new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = http.get(`${url}?uid=${uid}`, { agent }, (res) => {
      res.resume();
      res.on('end', () => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (res.statusCode === 200) latencies.push(ms);
        else errors++;
        resolve();
      });
    });
    req.on('error', () => {
      errors++;
      resolve();
    });
  });
  const cpu0 = cpuOf(pids);
  const t0 = Date.now();
  const pending = [];
  let k = 0;
  while (k < reads.length) {
    const now = Date.now() - t0;
    while (k < reads.length && reads[k].t <= now) {
      if (now - reads[k].t > 100) late++;
      const { i } = reads[k++];
      pending.push(get(`bench-${i}`).then(() => {
        const s = Math.floor((Date.now() - t0) / 1000);
        perSecond.set(s, (perSecond.get(s) || 0) + 1);
      }));
    }
    await sleep(Math.max(0, Math.min(10, (reads[k] ? reads[k].t : now) - now)));
  }
  await Promise.all(pending);
  const wall = (Date.now() - t0) / 1000;
  const cpu = cpuOf(pids) - cpu0;
  agent.destroy();
  const counts = [...perSecond.values()];
  return {
    requests: reads.length, errors, late, peak: Math.max(...counts), mean: reads.length / wall, wall,
    p50: pct(latencies, 50), p99: pct(latencies, 99), cpu,
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
      `${fmt(r.cpu, 2)} CPU s (${fmt((100 * r.cpu) / r.wall)} % of a core)`, `${r.errors} errors, ${r.late} sent >100 ms late`]);
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
      `${fmt(f.cpu, 2)} CPU s (${fmt((100 * f.cpu) / f.wall)} % of a core)`, `${f.errors} errors, ${f.late} sent >100 ms late`]);
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
