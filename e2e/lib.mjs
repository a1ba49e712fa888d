// Shared plumbing for the end-to-end suite: processes, ports, waiting, a tiny test harness.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A port free now, below the kernel's ephemeral range (32768 and up on Linux):
 * a port the kernel picked for `listen(0)` can be handed to any outbound
 * connection before the server that was meant to bind it does (sockudo once
 * failed to start that way, "Address already in use").
 */
const handedOut = new Set();
export async function freePort() {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (handedOut.has(port)) continue;
    const free = await new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('no free port below 32000 after 200 tries');
}

export async function waitForHttp(url, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url);
      if (res.status === 200) return;
    } catch {}
    await sleep(100);
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs} ms`);
}

/** Starts a process; its output goes to `logFile` (a writable stream). */
export function start(cmd, args, { env = {}, cwd, log } = {}) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  if (log) {
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
  }
  child.exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return child;
}

export async function stop(child, timeoutMs = 15000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await child.exited;
  clearTimeout(t);
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

export function assertEqual(actual, expected, message) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${message}: expected ${e}, got ${a}`);
}

/** A minimal sequential harness that ends with "N passed, N failed". */
export class Suite {
  constructor() {
    this.passed = 0;
    this.failed = 0;
    this.failures = [];
  }
  async test(name, fn, timeoutMs = 20000) {
    // E2E_ONLY=<regex> runs the matching cases only (for working on one).
    if (process.env.E2E_ONLY && !new RegExp(process.env.E2E_ONLY).test(name)) return;
    const t0 = Date.now();
    try {
      await withTimeout(fn(), timeoutMs, name);
      this.passed++;
      console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      this.failed++;
      this.failures.push(name);
      console.log(`FAIL ${name} (${Date.now() - t0} ms)\n     ${String(e && e.stack ? e.stack : e).split('\n').slice(0, 4).join('\n     ')}`);
    }
  }
  summary() {
    if (this.failures.length) console.log(`failed: ${this.failures.join('; ')}`);
    console.log(`${this.passed} passed, ${this.failed} failed`);
  }
}

/**
 * An nginx config with the repository's location snippets (deploy/nginx), in
 * front of the service at `upstreams` (ports; round robin), listening on
 * `listen`, plus `extra` locations. Its files live in `work`.
 */
export function nginxWithRecipe({ root, work, upstreams, listen, extra = '' }) {
  const snippets = path.join(root, 'deploy/nginx');
  const locations = fs
    .readFileSync(path.join(snippets, 'pusher-dual-auth-locations.conf'), 'utf8')
    .replaceAll('/etc/nginx/snippets/', `${snippets}/`);
  // A snippet whose include paths were not rewritten would make nginx refuse to start later, less clearly.
  if (!locations.includes(`${snippets}/`)) throw new Error('the nginx snippet no longer includes /etc/nginx/snippets/');
  const tmp = path.join(work, 'nginx-tmp');
  fs.mkdirSync(tmp, { recursive: true });
  return `worker_processes 1;
pid ${work}/nginx.pid;
error_log ${work}/nginx-error.log;
events {}
http {
  access_log off;
  client_body_temp_path ${tmp}/body; proxy_temp_path ${tmp}/proxy; fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;
  upstream pusher_dual_auth {
${upstreams.map((port) => `    server 127.0.0.1:${port} max_fails=0;`).join('\n')}
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${listen};
${locations}
${extra}
  }
}
`;
}

/** What is wrong with one client's numbers (empty when each number between first and last came once, in order). */
export function gapsAndRepeats(numbers) {
  const problems = [];
  for (let k = 1; k < numbers.length; k++) {
    if (numbers[k] !== numbers[k - 1] + 1) problems.push(`${numbers[k - 1]} then ${numbers[k]}`);
  }
  return problems;
}

/** A TCP proxy to `target` whose `cut(ms)` resets every connection and refuses new ones for `ms`. */
export async function cutProxy(target) {
  const port = await freePort();
  const sockets = new Set();
  const accept = (client) => {
    const upstream = net.connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
  };
  let server = null;
  const listen = async () => {
    server = net.createServer(accept);
    await new Promise((r) => server.listen(port, '127.0.0.1', r));
  };
  await listen();
  return {
    port,
    async cut(ms) {
      server.close(); // stops accepting at once (its callback would wait for the open connections)
      for (const s of sockets) s.resetAndDestroy();
      await sleep(ms);
      await listen();
    },
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/**
 * A TCP proxy to `target` that can fail the way a network does, until `restore()`:
 * - `cut()`: resets every connection and refuses new ones (the app's host is gone);
 * - `blackhole()`: a partition: every connection stays open but nothing is
 *   forwarded either way (each socket is paused, so the kernel's buffers fill and
 *   the peer's writes stall), and new connections are accepted and held, never
 *   forwarded; nobody is told anything.
 * `restore()` forwards new connections again; the connections a black hole held
 * are destroyed then (as a partition outlasting a NAT or proxy table does), or
 * kept held until `close()` with `{ release: false }`. `mode` is 'forward',
 * 'cut' or 'blackhole'; `faults` lists each fault's start and end (ms).
 */
export async function faultProxy(target) {
  const port = await freePort();
  const piped = new Set(); // [client, upstream] pairs, forwarding
  const held = new Set(); // sockets a black hole holds
  let mode = 'forward';
  const faults = [];
  const quiet = (s) => s.on('error', () => {});
  const hold = (s) => {
    s.unpipe();
    s.pause();
    held.add(s);
    s.on('close', () => held.delete(s));
  };
  const accept = (client) => {
    quiet(client);
    if (mode === 'blackhole') return hold(client);
    const upstream = net.connect(target, '127.0.0.1');
    quiet(upstream);
    const pair = [client, upstream];
    piped.add(pair);
    for (const s of pair) s.on('close', () => piped.delete(pair));
    client.pipe(upstream);
    upstream.pipe(client);
  };
  let server = null;
  const listen = async () => {
    server = net.createServer(accept);
    await new Promise((r) => server.listen(port, '127.0.0.1', r));
  };
  const stopListening = () => {
    if (server) server.close(); // stops accepting at once (its callback would wait for the open connections)
    server = null;
  };
  await listen();
  return {
    port,
    get mode() {
      return mode;
    },
    faults,
    /** Resets every connection and refuses new ones, until restore(). */
    cut() {
      if (mode !== 'forward') throw new Error(`faultProxy: cut() while ${mode}`);
      mode = 'cut';
      faults.push({ kind: 'cut', at: Date.now() });
      stopListening();
      for (const pair of piped) for (const s of pair) s.resetAndDestroy();
      piped.clear();
    },
    /** Holds every connection, open and new, forwarding nothing, until restore(). */
    blackhole() {
      if (mode !== 'forward') throw new Error(`faultProxy: blackhole() while ${mode}`);
      mode = 'blackhole';
      faults.push({ kind: 'blackhole', at: Date.now() });
      for (const pair of piped) for (const s of pair) hold(s);
      piped.clear();
    },
    /** Forwards new connections again; a black hole's held connections are destroyed unless `release: false`. */
    async restore({ release = true } = {}) {
      const was = mode;
      if (was === 'forward') return;
      mode = 'forward';
      faults[faults.length - 1].until = Date.now();
      if (was === 'cut') await listen();
      if (release) for (const s of held) s.destroy();
    },
    /** Connections open now (forwarding) and held (by a black hole). */
    counts() {
      return { forwarding: piped.size, held: held.size };
    },
    close() {
      for (const pair of piped) for (const s of pair) s.destroy();
      for (const s of held) s.destroy();
      stopListening();
    },
  };
}

/**
 * The failover decision a replica's /status states (docs/failover.md: "the
 * decision, since when"), as one value two replicas can be compared by: null
 * when no app is failed, undefined when /status has no failover section; what is
 * each replica's own (how many answers it redirected) is left out.
 */
export function failoverDecision(status) {
  const f = status && status.failover;
  if (!f || typeof f !== 'object') return undefined;
  const d = f.decision !== undefined ? f.decision : f.active !== undefined ? f.active : null;
  if (d === null || typeof d !== 'object') return d;
  const { redirected, redirected_total, ...rest } = d;
  void redirected, void redirected_total;
  return rest;
}
