// A full migration rehearsal, as a team would run it before the real move, and
// the report it attaches to its change request.
//
// sockudo with two apps (old, new), both sending webhooks; two replicas of the
// service on one Redis behind nginx (round robin: the repo's location snippets,
// plus /webhooks and the publish route); N pusher-js clients through the JS
// helper, each on a private and a presence channel, reaching the service only
// through nginx; the host publishing a numbered event every 250 ms through the
// fan-out. Steps 0 → 10 → 50 → 100 % by rewriting the config file both
// replicas read; during the 50 % step replica A is restarted (SIGTERM, start
// again) as a rolling deploy would. It passes when no client saw a failed
// subscription or move, no event was lost or repeated on any client, every
// client ends on the new app, both replicas' /status agree at each step, and
// both finally say the old app is drained.
//
// Usage: node e2e/rehearsal.mjs [--clients 200] [--dwell 10] [--out DIR] [--config your.toml]
//          [--allowed-hosts H,…] [--allowed-origins O,…] [--allow-no-tls]
//   SERVICE_BIN, SOCKUDO_BIN, NGINX_BIN, CHROMIUM as for run.mjs (scripts/rehearse sets them).
//   --config: rehearse with your own [apps] and [rollout] from/to instead of the
//   built-in pair on sockudo (no sockudo is started; clients connect where
//   /client-config sends them). The session check, webhooks, Redis and publish
//   keys are the rehearsal's own (set through DUAL_AUTH__* variables); the
//   file's `percent = …` line in [rollout] is what the steps rewrite.
//   --allowed-hosts, --allowed-origins, --allow-no-tls: what your app passes to the
//   helper's connect() as allowedHosts, allowedOrigins, allowNoTLS (the helper refuses
//   client_options hosts, auth endpoints on other origins and forceTLS = false
//   otherwise). The built-in pair on sockudo gets 127.0.0.1 and no TLS; with --config,
//   only what you pass (REHEARSAL_SOCKUDO_PORT: --allowed-hosts 127.0.0.1 --allow-no-tls).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { assert, freePort, nginxWithRecipe, sleep, start, stop, waitForHttp } from './lib.mjs';
import { startHost } from './host.mjs';
import { connect } from '../clients/js/pusher-dual-auth.mjs';

const require = createRequire(import.meta.url);
const Pusher = require('pusher-js');
const PusherServer = require('pusher');

const USAGE = 'usage: scripts/rehearse [--clients 200] [--dwell 10] [--out DIR] [--config your.toml]\n' +
  '         [--allowed-hosts ws.example.com,…] [--allowed-origins https://auth.example.com,…] [--allow-no-tls]';
let args;
try {
  ({ values: args } = parseArgs({
    options: { clients: { type: 'string', default: '200' }, dwell: { type: 'string', default: '10' }, out: { type: 'string' },
      config: { type: 'string' }, help: { type: 'boolean' },
      'allowed-hosts': { type: 'string' }, 'allowed-origins': { type: 'string' }, 'allow-no-tls': { type: 'boolean' } },
  }));
} catch (e) {
  console.error(`${e.message}\n${USAGE}`);
  process.exit(2);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const usageError = (message) => {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
};
const N = Number(args.clients);
if (!Number.isInteger(N) || N < 2) usageError('--clients must be a whole number ≥ 2');
// How long each step holds once every client is where it should be (publishing goes on).
const DWELL_MS = Number(args.dwell) * 1000;
if (!(DWELL_MS >= 0)) usageError('--dwell is seconds ≥ 0');
const here = path.dirname(new URL(import.meta.url).pathname);
const root = path.resolve(here, '..');
const SERVICE_BIN = process.env.SERVICE_BIN || path.join(root, 'target/debug/pusher-dual-auth');
const SOCKUDO_BIN = process.env.SOCKUDO_BIN || 'sockudo';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dual-auth-rehearsal-'));
const out = path.resolve(args.out || path.join(work, 'report'));
fs.mkdirSync(out, { recursive: true });
// REHEARSAL_SOCKUDO_PORT: with --config, start the built-in sockudo there anyway (to try --config without a network).
const sockudoPort = Number(process.env.REHEARSAL_SOCKUDO_PORT) || 0;
const [wsPort, hostPort, nginxPort, redisPort] = [sockudoPort || (await freePort()), await freePort(), await freePort(), await freePort()];
const replicas = [
  { name: 'A', port: await freePort(), admin: await freePort() },
  { name: 'B', port: await freePort(), admin: await freePort() },
];
const NGINX = `http://127.0.0.1:${nginxPort}`;
const HOST = `http://127.0.0.1:${hostPort}`;
const STEPS = [10, 50, 100];
const RESTART_AT = 50;

// The apps: the built-in pair on sockudo, or the user's config.
const builtIn = {
  old: { id: '300001', key: 'rehearsal-old-key', secret: 'rehearsal-old-secret' },
  new: { id: '400002', key: 'rehearsal-new-key', secret: 'rehearsal-new-secret' },
};
const userConfig = args.config ? fs.readFileSync(args.config, 'utf8') : null;
const names = userConfig ? rolloutNames(userConfig) : { from: 'old', to: 'new' };
// What the clients pass to connect(), as your app would: the built-in pair's client_options
// (below) send them to sockudo on 127.0.0.1 without TLS, which the helper takes only when allowed.
const commaList = (v) => (v ? v.split(',').map((x) => x.trim()).filter(Boolean) : []);
const allowances = {
  allowedHosts: [...new Set([...(userConfig ? [] : ['127.0.0.1']), ...commaList(args['allowed-hosts'])])],
  allowedOrigins: commaList(args['allowed-origins']),
  allowNoTLS: !userConfig || Boolean(args['allow-no-tls']),
};

/** [rollout] from/to of a user's config; a config without them cannot be rehearsed. */
function rolloutNames(text) {
  const section = /^\[rollout\]\s*$([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(text);
  if (!section) usageError(`${args.config} has no [rollout] section to rehearse`);
  const field = (k) => (new RegExp(`^\\s*${k}\\s*=\\s*"([^"]+)"`, 'm').exec(section[1]) || [])[1];
  const [from, to] = [field('from'), field('to')];
  if (!from || !to) usageError(`${args.config}: [rollout] needs from = "…" and to = "…"`);
  if (!/^\s*percent\s*=/m.test(section[1])) usageError(`${args.config}: [rollout] needs a percent = … line (the steps rewrite it)`);
  return { from, to };
}

function withPercent(percent) {
  if (userConfig) {
    // Only the percent line inside [rollout]; fails loudly if it is not there (checked above).
    const text = userConfig.replace(/(^\[rollout\]\s*$[\s\S]*?^\s*percent\s*=\s*)[0-9.]+/m, `$1${percent}`);
    assert(text !== userConfig || new RegExp(`percent\\s*=\\s*${percent}\\b`).test(userConfig), 'the percent line was not rewritten');
    return text;
  }
  const apps = Object.entries(builtIn)
    .map(([name, a]) => `[apps.${name}]\napp_id = "${a.id}"\nkey = "${a.key}"\nsecret = "${a.secret}"\nrest_url = "http://127.0.0.1:${wsPort}"\nclient_options = { wsHost = "127.0.0.1", wsPort = ${wsPort}, forceTLS = false, enabledTransports = ["ws"] }\n`)
    .join('\n');
  return `[server]
trusted_proxies = ["127.0.0.1"]
[session_check]
url = "${HOST}/check"
[log]
format = "json"
[status]
old_app = "old"
drain_window_secs = 5
sample_secs = 1
reconcile_secs = 2
[rollout]
from = "old"
to = "new"
percent = ${percent}
spread_secs = 3
${apps}`;
}

/** What every replica gets from the environment: its ports, and (for a user's config) the rehearsal's own parts. */
function replicaEnv(r) {
  const env = {
    DUAL_AUTH__SERVER__LISTEN: `127.0.0.1:${r.port}`,
    DUAL_AUTH__SERVER__ADMIN_LISTEN: `127.0.0.1:${r.admin}`,
    DUAL_AUTH__WEBHOOKS__FORWARD_URL: `${HOST}/pusher/webhook`,
    DUAL_AUTH__WEBHOOKS__KEY: 'rehearsal-hook-key',
    DUAL_AUTH__WEBHOOKS__SECRET: 'rehearsal-hook-secret',
    DUAL_AUTH__WEBHOOKS__STATE: 'redis',
    DUAL_AUTH__WEBHOOKS__REDIS_URL: `redis://127.0.0.1:${redisPort}/0`,
    DUAL_AUTH__PUBLISH__APP_ID: 'rehearsal',
    DUAL_AUTH__PUBLISH__KEY: 'rehearsal-publisher-key',
    DUAL_AUTH__PUBLISH__SECRET: 'rehearsal-publisher-secret',
    DUAL_AUTH__PUBLISH__TARGETS: `${names.from},${names.to}`,
    RUST_LOG: '',
  };
  if (userConfig) {
    env.DUAL_AUTH__SESSION_CHECK__URL = `${HOST}/check`;
    env.DUAL_AUTH__SERVER__TRUSTED_PROXIES = '127.0.0.1';
    env.DUAL_AUTH__STATUS__OLD_APP = names.from;
  }
  return env;
}

function sockudoConfig() {
  const apps = Object.values(builtIn)
    .map((a) => `
[[app_manager.array.apps]]
id = "${a.id}"
key = "${a.key}"
secret = "${a.secret}"
enabled = true
max_connections = 5000
enable_user_authentication = true
max_backend_events_per_second = 5000
max_read_requests_per_second = 5000
[[app_manager.array.apps.webhooks]]
url = "${NGINX}/webhooks"
event_types = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]
`)
    .join('');
  return `host = "127.0.0.1"\nport = ${wsPort}\ndebug = false\nshutdown_grace_period = 1\n[adapter]\ndriver = "local"\n[cache]\ndriver = "memory"\n[queue]\ndriver = "memory"\n[metrics]\nenabled = false\n[rate_limiter]\nenabled = false\n[webhooks.batching]\nenabled = false\n[app_manager]\ndriver = "memory"\n${apps}`;
}

/** nginx in front of both replicas, round robin: the repo's snippets, plus webhooks and publishing. */
function nginxConfig() {
  const include = `include ${path.join(root, 'deploy/nginx')}/pusher-dual-auth-proxy.conf;`;
  return nginxWithRecipe({
    root, work, upstreams: replicas.map((r) => r.port), listen: nginxPort,
    extra: `    location = /webhooks { proxy_pass http://pusher_dual_auth/webhooks; ${include} }
    location /apps/ { proxy_pass http://pusher_dual_auth; ${include} }`,
  });
}

const procs = [];
const log = fs.createWriteStream(path.join(work, 'processes.log'));
const configPath = path.join(work, 'service.toml');
function startReplica(r) {
  r.proc = start(SERVICE_BIN, ['serve', '--config', configPath], { env: replicaEnv(r), log: fs.createWriteStream(path.join(work, `replica-${r.name}.log`), { flags: 'a' }) });
  procs.push(r.proc);
  return waitForHttp(`http://127.0.0.1:${r.admin}/readyz`);
}
const status = async (r) => (await fetch(`http://127.0.0.1:${r.admin}/status`)).json();
/** The parts of /status every replica must agree on. */
function shared(s) {
  return JSON.stringify({
    apps: Object.fromEntries(Object.entries(s.apps).map(([k, a]) => [k, [a.auth_signed_total, a.occupied_channels]])),
    drained: s.drain.drained, quiet: s.drain.quiet_since_ms, history: s.history.length && s.history[s.history.length - 1].t,
    clients: s.clients.map((c) => [c.group, c.apps]), drift: s.fleet.drift, percent: s.rollout && s.rollout.percent,
  });
}
async function agreed(what, ok = () => true, ms = 15000) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    const views = await Promise.all(replicas.map(status));
    last = views;
    if (views.every((v) => !v.fleet.stale && ok(v)) && new Set(views.map(shared)).size === 1) return views;
    if (Date.now() > until) throw new Error(`${what}: replicas did not agree within ${ms} ms:\n${views.map(shared).join('\n')}`);
    await sleep(250);
  }
}
async function waitFor(what, ok, ms) {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(100);
  }
}

const report = { started: new Date().toISOString(), clients: N, steps: [], failures: [], checks: [] };
const clients = [];
let host;
let failed = false;
let publishing = null;
try {
  host = await startHost(hostPort, { pageDir: here });
  procs.push(start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { log }));
  if (!userConfig || sockudoPort) {
    fs.writeFileSync(path.join(work, 'sockudo.toml'), sockudoConfig());
    procs.push(start(SOCKUDO_BIN, ['--config', path.join(work, 'sockudo.toml')], { cwd: work, log }));
    for (const a of Object.values(builtIn)) await waitForHttp(`http://127.0.0.1:${wsPort}/up/${a.id}`);
  }
  fs.writeFileSync(configPath, withPercent(0));
  await Promise.all(replicas.map(startReplica));
  fs.writeFileSync(path.join(work, 'nginx.conf'), nginxConfig());
  procs.push(start(process.env.NGINX_BIN || 'nginx', ['-p', work, '-c', path.join(work, 'nginx.conf'), '-g', 'daemon off;'], { log }));
  await waitForHttp(`${NGINX}/pusher/dual-auth/healthz`);
  console.log(`rehearsal: ${N} clients, replicas ${replicas.map((r) => `${r.name} :${r.port} (admin :${r.admin})`).join(', ')}, nginx :${nginxPort}, work dir ${work}`);

  // The clients: every request through nginx, as a browser on the host's origin would.
  let auths = 0, refused = 0, retries = 0;
  const signedOn = {}; // app → auths answered 200, as the clients saw them
  const countingFetch = async (url, init) => {
    const res = await fetch(url, init);
    const app = /\/auth\/([^/?]+)/.exec(String(url));
    if (app) {
      auths++;
      if (res.status === 200) signedOn[app[1]] = (signedOn[app[1]] || 0) + 1;
      else refused++;
    }
    return res;
  };
  const signedTotal = () => Object.values(signedOn).reduce((a, b) => a + b, 0);
  // The fleet counted every auth the clients saw signed, on every replica (restarts included).
  const countsMatch = (v) => Object.values(v.apps).reduce((a, x) => a + x.auth_signed_total, 0) === signedTotal();
  const t0 = Date.now();
  for (let i = 0; i < N; i++) {
    const uid = `rehearsal-${i}`;
    const c = { uid, events: [], failures: [], switches: [], trace: [] };
    c.pusher = await connect(Pusher, {
      configUrl: `${NGINX}/pusher/dual-auth/client-config`,
      uid,
      fetch: countingFetch,
      retry: { onRetry: () => retries++ },
      onSwitch: (from, to) => c.switches.push(`${from}->${to}`),
      // What the helper saw on the tick channel, kept for the report of a client that lost an event.
      _trace: (name, source, event, data, primary, held) => {
        if (name === 'private-rehearsal') c.trace.push([Date.now(), source, event, data && data.n, primary, held]);
      },
      onSwitchFailed: (from, to, e) => c.failures.push(`move ${from}->${to} failed: ${e.message}`),
      ...allowances,
      options: {
        disableStats: true,
        channelAuthorization: { transport: 'ajax', headers: { Authorization: `Bearer ${uid}` } },
      },
    });
    c.pusher.bind('pusher:error', (e) => c.failures.push(`pusher:error ${JSON.stringify(e)}`));
    c.priv = c.pusher.subscribe('private-rehearsal');
    c.pres = c.pusher.subscribe(`presence-rehearsal-${i % 10}`);
    for (const ch of [c.priv, c.pres]) ch.bind('pusher:subscription_error', (e) => c.failures.push(`${ch.name}: ${JSON.stringify(e)}`));
    c.priv.bind('tick', (d) => {
      c.events.push(d.n);
      c.trace.push([Date.now(), 'delivered', 'tick', d.n]);
    });
    c.pusher.connection.bind('state_change', (st) => c.trace.push([Date.now(), 'state', st.previous, st.current, c.pusher.key]));
    clients.push(c);
  }
  // Each app's key as /client-config hands it out (the user's config is not parsed here).
  const keys = {};
  const onApp = (app) => clients.filter((c) => c.pusher.key === keys[app]).length;
  const allSubscribed = () => clients.every((c) => c.priv.subscribed && c.pres.subscribed);
  await waitFor('every client subscribed at 0 %', allSubscribed, 30000 + N * 100);
  report.connectSecs = (Date.now() - t0) / 1000;
  const first = await (await fetch(`${NGINX}/pusher/dual-auth/client-config?uid=rehearsal-0`)).json();
  keys[first.app] = first.key;
  assert(first.app === names.from, `at 0 % a client is sent to ${first.app}`);
  assert(onApp(names.from) === N, `at 0 % every client is on ${names.from}`);

  // The host publishes through the fan-out, every 250 ms, from now to the end.
  const publisher = new PusherServer({ appId: 'rehearsal', key: 'rehearsal-publisher-key', secret: 'rehearsal-publisher-secret', host: '127.0.0.1', port: nginxPort, useTLS: false });
  let published = 0, publishFailures = 0;
  const publishLog = [];
  publishing = setInterval(() => {
    const n = ++published;
    const t = Date.now();
    publisher.trigger('private-rehearsal', 'tick', { n }).then(
      (res) => publishLog.push([n, t, Date.now(), res.status]),
      (e) => { publishFailures++; publishLog.push([n, t, Date.now(), String(e)]); });
  }, 250);
  await agreed('0 %', (s) => s.rollout.percent === 0 && countsMatch(s) && s.fleet.replicas.filter((r) => r.live).length === 2);
  report.steps.push({ percent: 0, secs: report.connectSecs, onNew: 0, auths, note: `${N} clients connected and subscribed` });

  for (const percent of STEPS) {
    const started = Date.now();
    const authsBefore = auths;
    fs.writeFileSync(configPath, withPercent(percent));
    let restart = '';
    if (percent === RESTART_AT) {
      // A rolling deploy during the move: A stops gracefully and comes back on the same config.
      await sleep(1000);
      const a = replicas[0];
      const t = Date.now();
      await stop(a.proc);
      await startReplica(a);
      restart = `replica A restarted (SIGTERM → ready again in ${((Date.now() - t) / 1000).toFixed(1)} s)`;
    }
    // Both replicas reload the file (a watch); then where each client must end up: its assignment at this step, from the service itself.
    await agreed(`${percent} %: reloaded`, (v) => v.rollout.percent === percent, 10000).catch(async () => {
      const seen = await Promise.all(replicas.map(async (r) => (await status(r)).rollout.percent));
      if (!seen.every((p) => p === percent)) throw new Error(`${percent} %: the replicas run ${seen.join(' and ')} % 10 s after the config changed`);
    });
    const expected = await Promise.all(clients.map(async (c) => (await (await fetch(`${NGINX}/pusher/dual-auth/client-config?uid=${c.uid}`)).json())));
    for (const e of expected) keys[e.app] = e.key;
    const wantTo = expected.filter((e) => e.app === names.to).length;
    await waitFor(`${percent} %: every client on its assigned app`, () => clients.every((c, k) => c.pusher.key === expected[k].key), 30000 + N * 50)
      .catch((e) => {
        const behind = clients.filter((c, k) => c.pusher.key !== expected[k].key);
        for (const c of behind) fs.writeFileSync(path.join(work, `trace-${c.uid}.json`), JSON.stringify(c.trace));
        throw new Error(`${e.message}: ${behind.length} behind (${behind.slice(0, 5).map((c) => `${c.uid} on ${c.pusher.key}, state ${c.pusher.connection.state}, ${c.failures.join('; ') || 'no failure reported'}`).join(' | ')})`);
      });
    await waitFor(`${percent} %: every client subscribed`, allSubscribed, 20000);
    const moved = (Date.now() - started) / 1000;
    report.lastMoveMs = Date.now();
    const views = await agreed(`${percent} %`, (s) => s.rollout.percent === percent && countsMatch(s) && !s.fleet.drift && s.fleet.replicas.filter((r) => r.live).length === 2);
    const secs = (Date.now() - started) / 1000;
    await sleep(DWELL_MS);
    report.steps.push({ percent, secs: moved, onNew: wantTo, auths: auths - authsBefore, authRate: (auths - authsBefore) / secs, agreedAfter: secs, note: restart,
      statusShare: views[0].apps[names.to].recent_share });
    console.log(`step ${percent} %: ${wantTo}/${N} on ${names.to} after ${moved.toFixed(1)} s; replicas agree after ${secs.toFixed(1)} s${restart ? `; ${restart}` : ''}`);
  }
  assert(onApp(names.to) === N, `every client ends on ${names.to}`);

  // The end: the old app drained, said by both replicas (webhooks from both apps, the REST list).
  clearInterval(publishing);
  publishing = null;
  // With your own apps, their webhooks go to your production URL and other clients may
  // hold the old app: the drain is not the rehearsal's to check (REHEARSAL_EXPECT_DRAIN=1 does).
  const checkDrain = !userConfig || process.env.REHEARSAL_EXPECT_DRAIN === '1';
  const drainStarted = Date.now();
  const finalViews = await agreed(checkDrain ? 'old app drained' : 'the end', (s) => !checkDrain || s.drain.drained, 90000);
  const lastWebhooks = Object.fromEntries(Object.entries(finalViews[0].apps).map(([k, a]) => [k, a.last_webhook_ms]));
  if (checkDrain) {
    report.drainedAfter = (Date.now() - drainStarted) / 1000;
    // When the old app fell quiet for the fleet, after the last client left it (the verdict follows one window later).
    report.quietAfter = (finalViews[0].drain.quiet_since_ms - report.lastMoveMs) / 1000;
    report.window = finalViews[0].drain.window_secs;
    report.drainReason = finalViews[0].drain.reason;
    for (const app of [names.from, names.to]) assert(lastWebhooks[app], `a webhook from ${app} was seen by the fleet`);
  } else {
    report.drainSkipped = `not checked: your apps' webhooks go to your own URL (the fleet says: "${finalViews[0].drain.reason}")`;
  }
  await sleep(1000); // the last ticks arrive

  // Every client: no failure, and every event published since its first one, once, in order.
  for (const c of clients) {
    const firstN = c.events[0];
    const want = firstN === undefined ? [] : Array.from({ length: published - firstN + 1 }, (_, k) => firstN + k);
    if (JSON.stringify(c.events) !== JSON.stringify(want)) {
      const missing = want.filter((n) => !c.events.includes(n));
      c.failures.push(`events: ${c.events.length} received, ${missing.length} missing (${missing.slice(0, 5).join(',')}), ${c.events.length - new Set(c.events).size} repeated`);
      fs.writeFileSync(path.join(work, `trace-${c.uid}.json`), JSON.stringify(c.trace));
    }
    if (firstN === undefined || firstN > 8) c.failures.push(`first event ${firstN}: subscribed late`);
    report.failures.push(...c.failures.map((f) => `${c.uid}: ${f}`));
  }
  Object.assign(report, { auths, refused, retries, published, publishFailures, lastWebhooks });
  fs.writeFileSync(path.join(work, 'published.json'), JSON.stringify(publishLog));
  report.moved = clients.filter((c) => c.switches.length > 0).length;

  // The status page as the operator sees it, for the change request.
  const puppeteer = (await import('puppeteer-core')).default;
  const browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', `--user-data-dir=${path.join(work, 'chromium')}`] });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 900 });
    await page.goto(`http://127.0.0.1:${replicas[1].admin}/status.html`);
    await page.waitForSelector('body[data-loaded="yes"]', { timeout: 10000 });
    const shown = await page.evaluate(() => ({
      verdict: document.getElementById('verdict').textContent,
      replicas: [...document.querySelectorAll('#replicas tr')].length,
      warnings: document.getElementById('fleet-warnings').textContent,
    }));
    if (checkDrain) assert(shown.verdict.includes('drained:') && !shown.verdict.includes('not drained'), `the page says drained: ${shown.verdict}`);
    assert(shown.replicas >= 2, `the page lists the replicas (${shown.replicas})`);
    assert(shown.warnings === '', `no fleet warning on the page: ${shown.warnings}`);
    await page.screenshot({ path: path.join(out, 'status.png'), fullPage: true });
  } finally {
    await browser.close();
  }
  fs.writeFileSync(path.join(out, 'status.json'), JSON.stringify(finalViews[0], null, 2));
  assert(report.failures.length === 0, `${report.failures.length} client failure(s):\n  ${report.failures.slice(0, 20).join('\n  ')}`);
  assert(publishFailures === 0, `${publishFailures} publish(es) failed`);
} catch (e) {
  failed = true;
  report.error = String(e && e.stack ? e.stack : e);
  console.log(`REHEARSAL FAILED: ${report.error}`);
} finally {
  if (publishing) clearInterval(publishing);
  for (const c of clients) {
    try { c.pusher.disconnect(); } catch {}
  }
  await sleep(200);
  for (const p of procs.reverse()) await stop(p);
  if (host) host.server.close();
  report.finished = new Date().toISOString();
  writeReport(report, failed);
  console.log(`rehearsal ${failed ? 'FAILED' : 'passed'}: report in ${path.join(out, 'report.md')}${failed ? `, logs in ${work}` : ''}`);
  process.exit(failed ? 1 : 0);
}

function writeReport(r, failedRun) {
  const rows = r.steps.map((s) => `| ${s.percent} % | ${s.onNew} of ${r.clients} | ${s.secs.toFixed(1)} s | ${s.auths} | ${s.authRate ? s.authRate.toFixed(1) + '/s' : '–'} | ${s.agreedAfter ? s.agreedAfter.toFixed(1) + ' s' : '–'} | ${s.statusShare !== undefined ? (s.statusShare * 100).toFixed(1) + ' %' : '–'} | ${s.note || ''} |`);
  const text = `# Migration rehearsal: ${failedRun ? '**FAILED**' : 'passed'}

${r.started} → ${r.finished}. ${r.clients} pusher-js clients through the JS helper, each on a private
and a presence channel, every request through nginx (round robin over two replicas sharing
Redis); the host publishing every 250 ms through the fan-out; apps ${userConfig ? `from ${args.config}` : 'old and new on sockudo'}.
The clients' connect() allowances (your app needs the same): allowedHosts ${JSON.stringify(allowances.allowedHosts)}, allowedOrigins ${JSON.stringify(allowances.allowedOrigins)}, allowNoTLS ${allowances.allowNoTLS}.

| step | clients on ${names.to} | all moved and subscribed | auths | auth rate | replicas' /status agreed | ${names.to} share, last 5 min (fleet) | notes |
|---|---|---|---|---|---|---|---|
${rows.join('\n')}

- Old app drained: ${r.drainSkipped ? r.drainSkipped : r.drainedAfter !== undefined ? `quiet for the fleet ${r.quietAfter.toFixed(1)} s after the last client left it; both replicas said "drained" once the ${r.window} s window had passed ("${r.drainReason}")` : 'not reached'}.
- Auth requests: ${r.auths ?? '–'} (${r.refused ?? '–'} refused and retried by the helper, ${r.retries ?? '–'} retries); clients that moved: ${r.moved ?? '–'}.
- Events published: ${r.published ?? '–'} (${r.publishFailures ?? '–'} failed); every client received every event since its first, once, in order: ${r.failures.some((f) => f.includes('events:')) ? 'no' : r.published ? 'yes' : '–'}.
- Last webhook per app (fleet): ${r.lastWebhooks ? Object.entries(r.lastWebhooks).map(([k, v]) => `${k} ${v ? new Date(v).toISOString() : 'never'}`).join(', ') : '–'}.
- Client failures: ${r.failures.length}${r.failures.length ? '\n' + r.failures.slice(0, 30).map((f) => `  - ${f}`).join('\n') : ''}
${r.error ? `\n## Error\n\n\`\`\`\n${r.error}\n\`\`\`\n` : ''}
![status page at the end](status.png)

Final \`/status\`: [status.json](status.json).
`;
  fs.writeFileSync(path.join(out, 'report.md'), text);
}
