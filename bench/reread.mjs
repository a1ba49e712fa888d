// Re-reads after an announcement, for bench/client_config.py: CLIENTS clients,
// each reading GET URL once at its own moment, uniform within WINDOW_MS of the
// announcement (the helper's jitter: `random() * spread_secs * 1000` after a
// `rollout-changed`, and `random() * REREAD_FIRST_MS` (1 s) for the first re-read
// of a suspected connection; clients/js/pusher-dual-auth.mjs). Open loop: a read
// is sent at its moment whatever the server's backlog, over SOCKETS keep-alive
// connections (what the service sees behind the nginx recipe: its upstream
// `keepalive 32`); a read that finds every connection busy waits for one, and its
// latency counts that wait (from its moment to its answer's end), so a slow
// server cannot hide its queue. Each client sends its own id in the
// pusher_dual_auth_rid cookie, as a browser that read its assignment before.
//
// Prints one JSON line: the time from the announcement until the last client had
// its answer, latency percentiles, the answers that were not 200.
//
//   URL=http://127.0.0.1:8080/client-config CLIENTS=10000 WINDOW_MS=30000 SOCKETS=32 SEED=7 node bench/reread.mjs
import net from 'node:net';

const url = new URL(process.env.URL);
const CLIENTS = Number(process.env.CLIENTS || 10000);
const WINDOW_MS = Number(process.env.WINDOW_MS || 30000);
const SOCKETS = Number(process.env.SOCKETS || 32);
const SEED = Number(process.env.SEED || 7);

/** A seeded random (mulberry32): the service and the floor get the same moments. */
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

const random = seeded(SEED);
const reads = Array.from({ length: CLIENTS }, (_, i) => ({ at: Math.floor(random() * WINDOW_MS), i }));
reads.sort((a, b) => a.at - b.at);

const latencies = [];
const kinds = {};
let errors = 0;
let lastDone = 0;
let next = 0;
let answered = 0;
const queue = [];
const idle = [];
const all = [];
let t0 = 0n;
const now = () => Number(process.hrtime.bigint() - t0) / 1e6;

function open() {
  const c = net.connect(Number(url.port), url.hostname);
  c.setNoDelay(true);
  c.buf = Buffer.alloc(0);
  c.job = null;
  c.on('data', (d) => {
    c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
    const head = c.buf.indexOf('\r\n\r\n');
    if (head < 0 || !c.job) return;
    const text = c.buf.subarray(0, head).toString('latin1');
    const m = /content-length:\s*(\d+)/i.exec(text);
    if (!m) throw new Error(`an answer without Content-Length: ${text}`);
    const end = head + 4 + Number(m[1]);
    if (c.buf.length < end) return;
    c.buf = c.buf.subarray(end);
    const status = Number(text.slice(9, 12));
    const job = c.job;
    c.job = null;
    done(job, status);
    release(c);
  });
  c.on('error', () => {});
  c.on('close', () => {
    all.splice(all.indexOf(c), 1);
    if (c.job) done(c.job, 'closed');
    c.job = null;
    const i = idle.indexOf(c);
    if (i >= 0) idle.splice(i, 1);
    if (answered < CLIENTS) release(open());
  });
  all.push(c);
  return c;
}

function done(job, status) {
  const t = now();
  if (status === 200) latencies.push(t - job.at);
  else {
    errors++;
    kinds[status] = (kinds[status] || 0) + 1;
  }
  lastDone = Math.max(lastDone, t);
  if (++answered === CLIENTS) finish();
}

function send(c, job) {
  c.job = job;
  const id = `re${String(SEED).padStart(6, '0')}${String(job.i).padStart(24, '0')}`;
  c.write(`GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nCookie: pusher_dual_auth_rid=${id}\r\n\r\n`);
}

function release(c) {
  if (queue.length) send(c, queue.shift());
  else idle.push(c);
}

function tick() {
  const t = now();
  while (next < reads.length && reads[next].at <= t) {
    const job = reads[next++];
    if (idle.length) send(idle.pop(), job);
    else queue.push(job);
  }
  if (next < reads.length) setTimeout(tick, Math.max(0, Math.min(5, reads[next].at - now())));
}

function pct(q) {
  const s = Float64Array.from(latencies).sort();
  return s.length ? s[Math.min(s.length - 1, Math.ceil((q / 100) * s.length) - 1)] : null;
}

function finish() {
  for (const c of [...all]) c.destroy();
  console.log(JSON.stringify({
    clients: CLIENTS, window_ms: WINDOW_MS, sockets: SOCKETS,
    all_answered_ms: lastDone, p50_ms: pct(50), p99_ms: pct(99), max_ms: pct(100), errors, kinds,
  }));
  process.exit(0);
}

// The connections are open before the announcement, as a proxy's kept-alive pool is.
for (let s = 0; s < SOCKETS; s++) idle.push(open());
await new Promise((resolve) => setTimeout(resolve, 200));
t0 = process.hrtime.bigint();
tick();
