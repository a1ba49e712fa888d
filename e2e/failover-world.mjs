// What the failover scenarios (scenarios/failover*.mjs) share, beside world.mjs:
// a fleet of their own (one or two service replicas with [failover], each app
// behind its own faultProxy in front of the suite's one sockudo, optionally on
// Redis behind nginx), helper clients that record where they are and what they
// were told, and a numbered event published through the fan-out at 20 Hz.
//
// Each app reaches sockudo only through its proxy, WebSocket and REST alike: the
// app's rest_url is the proxy (the service's probes and publishes), and its
// client_options send clients there (/client-config), so failing a proxy fails
// the app for everyone, as an outage of one Pusher cluster would.
import * as w from './world.mjs';
import { faultProxy } from './lib.mjs';

export { faultProxy };

/** `text` with `anchor` replaced; throws when the anchor is gone (a config edit must not silently do nothing). */
export function edit(text, anchor, replacement) {
  if (typeof anchor === 'string' ? !text.includes(anchor) : !anchor.test(text)) throw new Error(`config edit: ${anchor} is not in the config`);
  return text.replace(anchor, replacement);
}

/**
 * The suite's service config (world.serviceConfig at 0 %) for one replica at
 * `r.port`/`r.admin`, each app's REST and clients through `proxies[app]`,
 * publishing with success = "any" (short per-target timeout, no retries: a dead
 * app must not slow the 20 Hz publisher down), and [failover] on.
 */
export function failoverConfig(r, { proxies, failover = {}, redisPort = null, percent = 0 }) {
  const { adminPort, serviceConfig, servicePort } = w;
  let c = serviceConfig(percent);
  c = edit(c, `listen = "127.0.0.1:${servicePort}"`, `listen = "127.0.0.1:${r.port}"`);
  c = edit(c, `admin_listen = "127.0.0.1:${adminPort}"`, `admin_listen = "127.0.0.1:${r.admin}"`);
  for (const [app, port] of Object.entries(proxies)) {
    c = edit(c, new RegExp(`(\\[apps\\.${app}\\][^\\[]*?)rest_url = "[^"]*"`),
      `$1rest_url = "http://127.0.0.1:${port}"\nclient_options = { wsHost = "127.0.0.1", wsPort = ${port}, forceTLS = false, enabledTransports = ["ws"] }`);
  }
  c = edit(c, 'targets = ["old", "new"]', 'targets = ["old", "new"]\nsuccess = "any"\ntimeout_ms = 400\nretries = 0');
  if (redisPort) {
    c = edit(c, 'secret = "host-webhook-secret"', `secret = "host-webhook-secret"\nstate = "redis"\nredis_url = "redis://127.0.0.1:${redisPort}/0"`);
  }
  const f = { enabled: true, probe_secs: 1, fail_after_secs: 3, ...failover };
  const line = ([k, v]) => `${k} = ${typeof v === 'string' ? `"${v}"` : v}`;
  return `${c}\n[failover]\n${Object.entries(f).map(line).join('\n')}\n`;
}

/**
 * A fleet for one scenario: a faultProxy per app in front of sockudo, `replicas`
 * service replicas (with Redis when more than one, and nginx in front of them
 * with the recipe's snippets), all on `failover` ({ return, return_after_secs, … }).
 * `configUrl` is what clients read (through nginx when there is one).
 */
export async function failoverFleet(name, { replicas: count = 1, failover = {} } = {}) {
  const { SERVICE_BIN, freePort, fs, nginxWithRecipe, path, root, start, stop, waitForHttp, work, wsPort } = w;
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  const log = fs.createWriteStream(path.join(dir, 'processes.log'), { flags: 'a' });
  const fleet = { dir, procs: [], replicas: [], proxies: {}, log };
  fleet.stop = async () => {
    for (const p of Object.values(fleet.proxies)) p.close();
    for (const p of fleet.procs.reverse()) await stop(p);
  };
  try {
    for (const app of ['old', 'new']) fleet.proxies[app] = await faultProxy(wsPort);
    const redisPort = count > 1 ? await freePort() : null;
    if (redisPort) {
      fleet.procs.push(start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { log }));
    }
    const proxies = Object.fromEntries(Object.entries(fleet.proxies).map(([k, p]) => [k, p.port]));
    for (let i = 0; i < count; i++) {
      const r = { name: 'ab'[i], port: await freePort(), admin: await freePort() };
      r.file = path.join(dir, `replica-${r.name}.toml`);
      r.logPath = path.join(dir, `replica-${r.name}.log`);
      fs.writeFileSync(r.file, failoverConfig(r, { proxies, failover, redisPort }));
      r.proc = start(SERVICE_BIN, ['serve', '--config', r.file], { log: fs.createWriteStream(r.logPath, { flags: 'a' }), env: { RUST_LOG: '' } });
      fleet.procs.push(r.proc);
      r.url = `http://127.0.0.1:${r.port}`;
      r.status = async () => (await fetch(`http://127.0.0.1:${r.admin}/status`)).json();
      fleet.replicas.push(r);
    }
    for (const r of fleet.replicas) await waitForHttp(`${r.url}/readyz`);
    if (count > 1) {
      const nginxPort = await freePort();
      fs.writeFileSync(path.join(dir, 'nginx.conf'), nginxWithRecipe({ root, work: dir, upstreams: fleet.replicas.map((r) => r.port), listen: nginxPort }));
      fleet.procs.push(start(process.env.NGINX_BIN || 'nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { log }));
      fleet.base = `http://127.0.0.1:${nginxPort}/pusher/dual-auth`;
      await waitForHttp(`${fleet.base}/healthz`);
    } else {
      fleet.base = fleet.replicas[0].url;
    }
    fleet.configUrl = `${fleet.base}/client-config`;
    fleet.publisher = new w.PusherServer({
      appId: 'dual', key: 'publisher-key', secret: 'publisher-secret', host: '127.0.0.1', port: fleet.replicas[0].port, useTLS: false,
    });
  } catch (e) {
    await fleet.stop();
    throw e;
  }
  return fleet;
}

/** The app a /status or /client-config `failover` object moves clients to, or null. */
export const decisionOf = (s) => (s && s.failover && (s.failover.decision !== undefined ? s.failover.decision : s.failover.active)) || null;

/** Waits until `ok()` (sync or async) holds; throws `what()` (a string or a function giving one) after `ms`. */
export async function waitUntil(what, ok, ms, every = 50) {
  const until = Date.now() + ms;
  for (;;) {
    if (await ok()) return Date.now();
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms: ${typeof what === 'function' ? what() : what}`);
    await w.sleep(every);
  }
}

/**
 * `n` helper clients of the fleet (uids `${prefix}-${i}`), each subscribed to
 * `channel`, recording: the numbers of its `tick` events, every
 * pusher:subscription_succeeded that reached the app, every onFailover and
 * onSwitch (with their time), recovery gaps, and `onNewAt`/`onOldAt` (when it
 * was last seen connected and subscribed on each app, sampled every 50 ms by
 * `watch()`).
 */
export async function helperClients(fleet, n, channel, prefix, failoverOptions = undefined) {
  const { APPS, Pusher, clients, connect } = w;
  const got = [];
  const options = { enabledTransports: ['ws'], disableStats: true, channelAuthorization: { headers: { Authorization: 'Bearer alice' } } };
  await Promise.all(Array.from({ length: n }, async (_, i) => {
    const r = { i, numbers: [], succeeded: 0, failovers: [], switches: [], switchFailures: [], gaps: [], states: [], announced: [] };
    r.pusher = await connect(Pusher, {
      configUrl: fleet.configUrl, uid: `${prefix}-${i}`, options, allowedHosts: ['127.0.0.1'], allowNoTLS: true,
      onFailover: (from, to, reason) => r.failovers.push({ from, to, reason, at: Date.now() }),
      onSwitch: (from, to) => r.switches.push({ from, to, at: Date.now() }),
      onSwitchFailed: (from, to, e) => r.switchFailures.push({ from, to, error: String(e && e.message), at: Date.now() }),
      ...(failoverOptions === undefined ? {} : { failover: failoverOptions }),
    });
    clients.push(r.pusher);
    r.channel = r.pusher.subscribe(channel);
    r.channel.bind('tick', (d) => r.numbers.push(d.n));
    r.channel.bind('pusher:subscription_succeeded', () => r.succeeded++);
    r.channel.bind('pusher-dual-auth:recovery_gap', (g) => r.gaps.push(g));
    r.pusher.connection.bind('state_change', (s) => r.states.push(`${s.current}@${Date.now()}`));
    // Announcements heard on any channel (the helper's control channel), for failure messages.
    r.pusher.bind('rollout-changed', (d) => r.announced.push({ at: Date.now(), data: typeof d === 'string' ? d : JSON.stringify(d) }));
    got.push(r);
  }));
  got.sort((a, b) => a.i - b.i);
  const appOf = (r) => (r.pusher.key === APPS.new.key ? 'new' : r.pusher.key === APPS.old.key ? 'old' : r.pusher.key);
  const live = (r) => r.pusher.connection.state === 'connected' && r.channel.subscribed;
  let timer = null;
  return {
    got,
    appOf,
    live,
    /** Every client connected and subscribed (on `app`, if given). */
    all: (app) => got.every((r) => live(r) && (!app || appOf(r) === app)),
    where: () => got.reduce((m, r) => ((m[`${appOf(r)}${live(r) ? '' : ' (not live)'}`] = (m[`${appOf(r)}${live(r) ? '' : ' (not live)'}`] || 0) + 1), m), {}),
    watch() {
      timer = setInterval(() => {
        const t = Date.now();
        for (const r of got) {
          if (!live(r)) continue;
          const app = appOf(r);
          if (app === 'new') r.onNewAt = r.onNewAt || t;
          if (app === 'old' && r.onNewAt) r.backOldAt = r.backOldAt || t;
        }
      }, 50);
    },
    unwatch() {
      clearInterval(timer);
    },
    /** What a client went through, for a failure message (times relative to `since`). */
    describe(r, since = 0) {
      const t = (x) => `${((x - since) / 1000).toFixed(1)}s`;
      return `client ${r.i}: ${appOf(r)} ${r.pusher.connection.state}${r.channel.subscribed ? ' subscribed' : ''}; ` +
        `onFailover ${JSON.stringify(r.failovers.map((f) => [f.from, f.to, f.reason, t(f.at)]))}; ` +
        `onSwitch ${JSON.stringify(r.switches.map((f) => [f.from, f.to, t(f.at)]))}; ` +
        `onSwitchFailed ${JSON.stringify(r.switchFailures.map((f) => [f.from, f.to, f.error, t(f.at)]))}; ` +
        `states ${r.states.slice(-6).map((x) => { const [s_, at] = x.split('@'); return `${s_}@${t(Number(at))}`; }).join(' ')}; ` +
        `channels ${r.pusher.allChannels().map((c) => `${c.name}${c.subscribed ? '' : ' (not subscribed)'}`).join(', ')}; ` +
        `announcements heard ${JSON.stringify(r.announced.map((a) => [t(a.at), a.data.slice(0, 160)]))}`;
    },
    /** Up to `k` clients for which `ok` does not hold, described. */
    stuck(ok, since = 0, k = 3) {
      const bad = got.filter((r) => !ok(r));
      return `${bad.length} of ${got.length}, e.g.\n     ${bad.slice(0, k).map((r) => this.describe(r, since)).join('\n     ')}`;
    },
    disconnect() {
      clearInterval(timer);
      for (const r of got) {
        try { r.pusher.disconnect(); } catch {}
      }
    },
  };
}

/**
 * A numbered `tick` on `channel` through the fan-out every 50 ms (20 Hz), one at
 * a time, in order; `log` holds [n, sent, answered] (ms) of each accepted one.
 */
export function publishing(fleet, channel) {
  const p = { n: 0, errors: 0, lastError: null, stopped: false, slowest: 0, log: [] };
  p.done = (async () => {
    while (!p.stopped) {
      const t = Date.now();
      await fleet.publisher.trigger(channel, 'tick', { n: p.n + 1 }).then(() => p.log.push([++p.n, t, Date.now()]), (e) => {
        p.errors++;
        p.lastError = `${e && e.status} ${e && e.body ? String(e.body).slice(0, 200) : e}`;
      });
      p.slowest = Math.max(p.slowest, Date.now() - t);
      await w.sleep(Math.max(0, 50 - (Date.now() - t)));
    }
  })();
  p.stop = async () => {
    p.stopped = true;
    await p.done;
  };
  return p;
}

/** Percentile of a list of numbers (nearest rank). */
export function pct(xs, q) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1))];
}

/**
 * What is wrong with the clients' numbers, events, subscriptions and moves, as
 * one message per client (empty: all fine). `last` is the last number published,
 * `first` the first every client must have (they subscribed before publishing
 * began). `once`: exactly one pusher:subscription_succeeded reached the app (not
 * so across a plain reconnect to the same app, where pusher-js subscribes again).
 */
export function lossless(got, last, first = 1, { once = true } = {}) {
  const problems = [];
  for (const r of got) {
    const gr = w.gapsAndRepeats(r.numbers);
    if (gr.length) problems.push(`client ${r.i}: lost or repeated ${gr.slice(0, 5).join(', ')}${gr.length > 5 ? ` (+${gr.length - 5})` : ''}`);
    if (r.numbers[0] !== first) problems.push(`client ${r.i}: first number ${r.numbers[0]}, not ${first}`);
    if (r.numbers[r.numbers.length - 1] !== last) problems.push(`client ${r.i}: last number ${r.numbers[r.numbers.length - 1]}, not ${last}`);
    if (once && r.succeeded !== 1) problems.push(`client ${r.i}: ${r.succeeded} pusher:subscription_succeeded reached the app`);
    if (r.gaps.length) problems.push(`client ${r.i}: recovery_gap ${JSON.stringify(r.gaps)}`);
  }
  return problems;
}

/**
 * For a failure message: when the numbers some clients lost or repeated were
 * published (sent and answered, seconds after `since`), beside when each of
 * those clients was on the new app and told onFailover.
 */
export function lostContext(got, pub, since, k = 3) {
  const t = (x) => (x === undefined ? '–' : `${((x - since) / 1000).toFixed(2)}s`);
  const at = new Map(pub.log.map(([n, sent, answered]) => [n, [sent, answered]]));
  const lines = [];
  for (const r of got) {
    const problems = w.gapsAndRepeats(r.numbers);
    if (!problems.length) continue;
    const missing = [];
    for (let j = 1; j < r.numbers.length; j++) {
      for (let x = r.numbers[j - 1] + 1; x < r.numbers[j]; x++) missing.push(x);
      if (r.numbers[j] <= r.numbers[j - 1]) missing.push(`repeat ${r.numbers[j]}`);
    }
    lines.push(`client ${r.i}: ${missing.slice(0, 4).map((x) => (typeof x === 'number' ? `${x} (published ${t((at.get(x) || [])[0])}-${t((at.get(x) || [])[1])})` : x)).join(', ')}; ` +
      `on new ${t(r.onNewAt)}, onFailover ${r.failovers.map((f) => t(f.at)).join(' ')}, states ${r.states.slice(-4).map((x) => { const [s_, a] = x.split('@'); return `${s_}@${t(Number(a))}`; }).join(' ')}`);
    if (lines.length >= k) break;
  }
  return lines.length ? `\n     ${lines.join('\n     ')}` : '';
}
