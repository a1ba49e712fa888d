// Reconnect-storm benchmark: U users, each with T tabs (same cookie), each tab
// authorizing C channels — all at once, then again 1 s later with new socket ids
// (the reconnect). The host session check takes 20 ms (a database lookup) and
// counts its calls. Run for three configs: no sharing, coalescing (the default),
// coalescing + a 5 s decision cache.
//   node bench/storm.mjs   (USERS=200 TABS=2 CHANNELS=5)
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { freePort, sleep, waitForHttp, stop } from '../e2e/lib.mjs';

const USERS = Number(process.env.USERS || 200);
const TABS = Number(process.env.TABS || 2);
const CHANNELS = Number(process.env.CHANNELS || 5);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const bin = process.env.SERVICE_BIN || path.join(root, 'target/release/pusher-dual-auth');

let hostCalls = 0;
const hostPort = await freePort();
const host = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    hostCalls++;
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"user_id":"u","user_info":{"name":"Storm"}}');
    }, 20);
  });
});
await new Promise((r) => host.listen(hostPort, '127.0.0.1', r));
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function post(port, cookie, body) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = http.request({ host: '127.0.0.1', port, path: '/auth/new', method: 'POST', agent,
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie, 'content-length': Buffer.byteLength(body) } },
      (res) => { res.resume(); res.on('end', () => resolve({ status: res.statusCode, ms: Number(process.hrtime.bigint() - t0) / 1e6 })); });
    req.on('error', () => resolve({ status: 0, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    req.end(body);
  });
}

async function wave(port, socketBase) {
  const jobs = [];
  for (let u = 0; u < USERS; u++)
    for (let t = 0; t < TABS; t++)
      for (let c = 0; c < CHANNELS; c++)
        jobs.push(post(port, `session=user${u}`, `socket_id=${socketBase + u * TABS + t}.1&channel_name=private-u${u}-c${c}`));
  const before = hostCalls;
  const results = await Promise.all(jobs);
  const ms = results.map((r) => r.ms).sort((a, b) => a - b);
  return {
    requests: results.length,
    ok: results.filter((r) => r.status === 200).length,
    hostCalls: hostCalls - before,
    p99: ms[Math.floor(ms.length * 0.99)],
  };
}

const configs = [
  ['no sharing', 'coalesce = false'],
  ['coalescing (default)', 'coalesce = true'],
  ['coalescing + 5 s cache', 'coalesce = true\ncache_ttl_ms = 5000'],
];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dual-auth-storm-'));
console.log(`storm: ${USERS} users x ${TABS} tabs x ${CHANNELS} channels = ${USERS * TABS * CHANNELS} auth requests per wave; host check 20 ms`);
console.log(`${'config'.padEnd(26)}${'wave'.padEnd(12)}${'requests'.padStart(9)}${'200s'.padStart(7)}${'host calls'.padStart(12)}${'p99 ms'.padStart(9)}`);
for (const [name, extra] of configs) {
  const port = await freePort();
  const cfg = `[server]\nlisten = "127.0.0.1:${port}"\n[session_check]\nurl = "http://127.0.0.1:${hostPort}/check"\n${extra}\n` +
    `[apps.new]\napp_id = "1"\nkey = "k"\nsecret = "s"\n[log]\nlevel = "warn"\n`;
  fs.writeFileSync(path.join(work, 'c.toml'), cfg);
  const svc = spawn(bin, ['serve', '--config', path.join(work, 'c.toml')], { stdio: 'ignore', env: { ...process.env, RUST_LOG: '' } });
  svc.exited = new Promise((r) => svc.on('exit', r));
  await sleep(300);
  await waitForHttp(`http://127.0.0.1:${port}/healthz`);
  const first = await wave(port, 1000);
  await sleep(1000);
  const second = await wave(port, 900000);
  for (const [label, w] of [['first', first], ['reconnect', second]])
    console.log(`${name.padEnd(26)}${label.padEnd(12)}${String(w.requests).padStart(9)}${String(w.ok).padStart(7)}${String(w.hostCalls).padStart(12)}${w.p99.toFixed(1).padStart(9)}`);
  await stop(svc);
}
host.close();
agent.destroy();
fs.rmSync(work, { recursive: true, force: true });
