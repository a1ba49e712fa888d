// What the rehearsal's steps share: the command line (cli.mjs), paths and
// ports, the apps and the configs written from them, the processes, the
// replicas' /status, the clients and the report. Made once, on import;
// ../rehearsal.mjs runs the steps in order.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { assert, freePort, nginxWithRecipe, sleep, start, waitForHttp } from '../lib.mjs';
import { N, args, names, userConfig } from './cli.mjs';

export { args, allowances, DWELL_MS, N, names, userConfig } from './cli.mjs';
export { assert, sleep, start, stop, waitForHttp } from '../lib.mjs';
export { connect } from '../../clients/js/pusher-dual-auth.mjs';

const require = createRequire(import.meta.url);
export const Pusher = require('pusher-js');
export const PusherServer = require('pusher');

/** e2e/: the host app's pages are served from here. */
export const here = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
export const root = path.resolve(here, '..');
export const SERVICE_BIN = process.env.SERVICE_BIN || path.join(root, 'target/debug/pusher-dual-auth');
export const SOCKUDO_BIN = process.env.SOCKUDO_BIN || 'sockudo';
export const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dual-auth-rehearsal-'));
// The report goes to --out, else into the work dir.
export const out = path.resolve(args.out || path.join(work, 'report'));
fs.mkdirSync(out, { recursive: true });
// REHEARSAL_SOCKUDO_PORT: with --config, start the built-in sockudo there anyway (to try --config without a network).
export const sockudoPort = Number(process.env.REHEARSAL_SOCKUDO_PORT) || 0;
export const [wsPort, hostPort, nginxPort, redisPort] = [sockudoPort || (await freePort()), await freePort(), await freePort(), await freePort()];
export const replicas = [
  { name: 'A', port: await freePort(), admin: await freePort() },
  { name: 'B', port: await freePort(), admin: await freePort() },
];
export const NGINX = `http://127.0.0.1:${nginxPort}`;
export const HOST = `http://127.0.0.1:${hostPort}`;
export const STEPS = [10, 50, 100];
export const RESTART_AT = 50;

export const builtIn = {
  old: { id: '300001', key: 'rehearsal-old-key', secret: 'rehearsal-old-secret' },
  new: { id: '400002', key: 'rehearsal-new-key', secret: 'rehearsal-new-secret' },
};

/** The config both replicas read, at `percent`: the user's (its percent line rewritten), or the built-in pair's. */
export function withPercent(percent) {
  if (userConfig) {
    // Only the percent line inside [rollout]; fails loudly if it is not there (cli.mjs checked it is).
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

export function sockudoConfig() {
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
export function nginxConfig() {
  const include = `include ${path.join(root, 'deploy/nginx')}/pusher-dual-auth-proxy.conf;`;
  return nginxWithRecipe({
    root, work, upstreams: replicas.map((r) => r.port), listen: nginxPort,
    extra: `    location = /webhooks { proxy_pass http://pusher_dual_auth/webhooks; ${include} }
    location /apps/ { proxy_pass http://pusher_dual_auth; ${include} }`,
  });
}

/** Every process started, stopped in reverse order at the end. */
export const procs = [];
export const log = fs.createWriteStream(path.join(work, 'processes.log'));
export const configPath = path.join(work, 'service.toml');
export function startReplica(r) {
  r.proc = start(SERVICE_BIN, ['serve', '--config', configPath], { env: replicaEnv(r), log: fs.createWriteStream(path.join(work, `replica-${r.name}.log`), { flags: 'a' }) });
  procs.push(r.proc);
  return waitForHttp(`http://127.0.0.1:${r.admin}/readyz`);
}
export const status = async (r) => (await fetch(`http://127.0.0.1:${r.admin}/status`)).json();
/** The parts of /status every replica must agree on. */
function shared(s) {
  return JSON.stringify({
    apps: Object.fromEntries(Object.entries(s.apps).map(([k, a]) => [k, [a.auth_signed_total, a.occupied_channels]])),
    drained: s.drain.drained, quiet: s.drain.quiet_since_ms, history: s.history.length && s.history[s.history.length - 1].t,
    clients: s.clients.map((c) => [c.group, c.apps]), drift: s.fleet.drift, percent: s.rollout && s.rollout.percent,
  });
}
/** Both replicas' /status, once they agree (and `ok` holds for each). */
export async function agreed(what, ok = () => true, ms = 15000) {
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
export async function waitFor(what, ok, ms) {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(100);
  }
}

/** What the report says (report.mjs writes it, failed or not). */
export const report = { started: new Date().toISOString(), clients: N, steps: [], failures: [], checks: [] };
/** The clients: { uid, pusher, priv, pres, events, failures, switches, trace } (clients.mjs). */
export const clients = [];
/** What the running rehearsal holds: the host app, the publishing timer, and the counts the steps keep. */
export const run = {
  host: null,
  publishing: null,
  auths: 0, refused: 0, retries: 0,
  signedOn: {}, // app → auths answered 200, as the clients saw them
  keys: {}, // app → its key, as /client-config hands it out (the user's config is not parsed here)
  published: 0, publishFailures: 0, publishLog: [],
};
export const onApp = (app) => clients.filter((c) => c.pusher.key === run.keys[app]).length;
export const allSubscribed = () => clients.every((c) => c.priv.subscribed && c.pres.subscribed);
const signedTotal = () => Object.values(run.signedOn).reduce((a, b) => a + b, 0);
/** The fleet counted every auth the clients saw signed, on every replica (restarts included). */
export const countsMatch = (v) => Object.values(v.apps).reduce((a, x) => a + x.auth_signed_total, 0) === signedTotal();
