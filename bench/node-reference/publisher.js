// The host's publish, with the official `pusher` SDK, for bench/publish.py: either
// to both apps directly, in parallel (what a host does without the service: two
// triggers, Promise.all), or once to the service, which fans out. Open loop: a
// publish starts every 1/RATE s whatever the answers do, so both modes carry the
// same load; each publish's latency is from its trigger call to its promise
// settling, as the host's code sees it. Keep-alive agents on both sides.
//   MODE=direct APPS=1111:old-key:old-secret@127.0.0.1:8081,2222:...@...:8082 node publisher.js
//   MODE=service APPS=dual:publisher-key:publisher-secret@127.0.0.1:8080 node publisher.js
// KIND=single|batch (triggerBatch of BATCH events), RATE publishes/s, SECONDS,
// WARMUP s (not counted). Prints one JSON line.
const http = require('node:http');
const Pusher = require('pusher');

const MODE = process.env.MODE || 'service';
const KIND = process.env.KIND || 'single';
const RATE = Number(process.env.RATE || 1000);
const SECONDS = Number(process.env.SECONDS || 5);
const WARMUP = Number(process.env.WARMUP || 1);
const BATCH = Number(process.env.BATCH || 10);
const MAX_IN_FLIGHT = 2048;

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const clients = process.env.APPS.split(',').map((spec) => {
  const [cred, where] = spec.split('@');
  const [appId, key, secret] = cred.split(':');
  const [host, port] = where.split(':');
  return new Pusher({ appId, key, secret, host, port: Number(port), agent, timeout: 5000 });
});
if (MODE === 'direct' && clients.length < 2) throw new Error('direct needs both apps');

const data = { n: 1, pad: 'x'.repeat(100) };
const batch = Array.from({ length: BATCH }, (_, i) => ({ channel: `private-bench-${i}`, name: 'tick', data }));
const one = (c) => (KIND === 'batch' ? c.triggerBatch(batch) : c.trigger('private-bench', 'tick', data));
const publish = () => Promise.all(clients.map(one));

const latencies = [];
let errors = 0;
let inFlight = 0;
let skipped = 0;

async function run() {
  const start = process.hrtime.bigint();
  const warmEnd = start + BigInt(Math.round(WARMUP * 1e9));
  const end = warmEnd + BigInt(Math.round(SECONDS * 1e9));
  const interval = 1e9 / RATE;
  let cpu0 = null;
  let sent = 0;
  await new Promise((done) => {
    const tick = () => {
      const now = process.hrtime.bigint();
      if (now >= end) return done();
      if (cpu0 === null && now >= warmEnd) cpu0 = process.cpuUsage();
      // Every publish due by now starts now (timers fire at ~1 ms granularity).
      const due = Math.floor(Number(now - start) / interval);
      for (; sent < due; sent++) {
        if (inFlight >= MAX_IN_FLIGHT) {
          skipped++;
          continue;
        }
        const t0 = process.hrtime.bigint();
        const counted = t0 >= warmEnd;
        inFlight++;
        publish().then(
          () => {
            inFlight--;
            if (counted) latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
          },
          () => {
            inFlight--;
            if (counted) errors++;
          },
        );
      }
      setTimeout(tick, 1); // not setImmediate: a spinning loop would take a core from the rest
    };
    tick();
  });
  while (inFlight > 0) await new Promise((r) => setTimeout(r, 5));
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
  console.log(JSON.stringify({
    mode: MODE, kind: KIND, rate: RATE, seconds: SECONDS,
    publishes: latencies.length, errors, skipped,
    p50_ms: pct(50), p90_ms: pct(90), p99_ms: pct(99), max_ms: latencies[latencies.length - 1],
    // The host's own CPU per publish (this process: the SDK's signing, requests, answers).
    host_cpu_us_per_publish: (cpu.user + cpu.system) / Math.max(latencies.length, 1),
  }));
  agent.destroy();
}

run();
