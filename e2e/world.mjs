// What the end-to-end scenarios share: the apps, ports and configs, the
// processes' addresses, client helpers, the suite and the host app (set once it
// runs). run.mjs starts the processes; each scenario is a file in scenarios/.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { createHash, createHmac } from 'node:crypto';
import { Suite, assert, assertEqual, cutProxy, freePort, gapsAndRepeats, nginxWithRecipe, sleep, start, stop, waitForHttp } from './lib.mjs';
import { connect, retryingAuth } from '../clients/js/pusher-dual-auth.mjs';

export { fs, os, path, createHash, createHmac, assert, assertEqual, cutProxy, freePort, gapsAndRepeats, nginxWithRecipe, sleep, start, stop, waitForHttp, connect, retryingAuth };

export const require = createRequire(import.meta.url);
export const Pusher = require('pusher-js'); // the Node build, encryption-capable
export const PusherServer = require('pusher');
export const PusherBatchAuthorizer = require('pusher-js-auth');

export const here = path.dirname(new URL(import.meta.url).pathname);
export const root = path.resolve(here, '..');
export const SERVICE_BIN = process.env.SERVICE_BIN || path.join(root, 'target/debug/pusher-dual-auth');
export const SOCKUDO_BIN = process.env.SOCKUDO_BIN || 'sockudo';
// A Python with asyncpusher (scripts/e2e-setup makes one) for the native-client cases.
export const PYTHON = process.env.PYTHON || 'python3';

/** A uid's sticky rollout bucket (0-9999): HMAC-SHA256 of the uid under a salt of the two app ids. */
export function rolloutBucket(fromId, toId, uid) {
  const salt = createHash('sha256').update(`pusher-dual-auth rollout\n${fromId}\n${toId}`).digest();
  return createHmac('sha256', salt).update(uid).digest().readUInt32BE(0) % 10000;
}

export const APPS = {
  // One master key for both apps: published ciphertext must decrypt on either (see [publish]).
  old: { id: '100001', key: 'old-app-key', secret: 'old-app-secret', master: Buffer.alloc(32, 1).toString('base64') },
  new: { id: '200002', key: 'new-app-key', secret: 'new-app-secret', master: Buffer.alloc(32, 1).toString('base64') },
};

export const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dual-auth-e2e-'));
export const [wsPort, servicePort, hostPort, nginxPort, adminPort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
export const NGINX = `http://127.0.0.1:${nginxPort}`;
export const SERVICE = `http://127.0.0.1:${servicePort}`;
// Metrics and the status page live on the admin listener only.
export const ADMIN = `http://127.0.0.1:${adminPort}`;
export const HOST_ORIGIN = `http://127.0.0.1:${hostPort}`;
export const serviceLogPath = path.join(work, 'service.log');

export function sockudoConfig() {
  const apps = Object.values(APPS)
    .map(
      (a) => `
[[app_manager.array.apps]]
id = "${a.id}"
key = "${a.key}"
secret = "${a.secret}"
enabled = true
max_connections = 1000
enable_client_messages = true
enable_user_authentication = true
max_client_events_per_second = 100
max_backend_events_per_second = 1000
max_read_requests_per_second = 1000

[[app_manager.array.apps.webhooks]]
url = "${SERVICE}/webhooks"
event_types = ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event"]
`,
    )
    .join('');
  return `host = "127.0.0.1"
port = ${wsPort}
debug = false
shutdown_grace_period = 1
[adapter]
driver = "local"
[cache]
driver = "memory"
[queue]
driver = "memory"
[metrics]
enabled = false
[rate_limiter]
enabled = false
[webhooks.batching]
enabled = false
[app_manager]
driver = "memory"
${apps}`;
}

export function serviceConfig(rolloutPercent = 0) {
  const apps = Object.entries(APPS)
    .map(
      ([name, a]) => `
[apps.${name}]
app_id = "${a.id}"
key = "${a.key}"
secret = "${a.secret}"
encryption_master_key_base64 = "${a.master}"
rest_url = "http://127.0.0.1:${wsPort}"
`,
    )
    .join('');
  return `[server]
listen = "127.0.0.1:${servicePort}"
admin_listen = "127.0.0.1:${adminPort}"
allowed_origins = ["${HOST_ORIGIN}"]
trusted_proxies = ["127.0.0.1"]
[session_check]
url = "${HOST_ORIGIN}/check"
timeout_ms = 2000
[log]
format = "json"
level = "debug"
[webhooks]
forward_url = "${HOST_ORIGIN}/pusher/webhook"
key = "host-webhook-key"
secret = "host-webhook-secret"
[status]
old_app = "old"
drain_window_secs = 3
sample_secs = 1
reconcile_secs = 2
[presence]
bridge = ["presence-bridge-*"]
[publish]
app_id = "dual"
key = "publisher-key"
secret = "publisher-secret"
targets = ["old", "new"]
[recovery]
window_secs = 120
[rollout]
from = "old"
to = "new"
percent = ${rolloutPercent}
spread_secs = 3
${apps}`;
}

/** nginx with the repository's location snippets, in front of the service and the host. */
export function nginxConfig() {
  return nginxWithRecipe({ root, work, upstreams: [servicePort], listen: nginxPort, extra: `    location / { proxy_pass ${HOST_ORIGIN}; }` });
}

/** Headless Debian Chromium for the browser cases (no network beyond loopback). */
export async function launchChromium(profileDir) {
  const puppeteer = (await import('puppeteer-core')).default;
  return puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', `--user-data-dir=${profileDir}`],
  });
}

/** A pusher-js client of `app`, authorizing at /auth/<route> as `token`. */
export function client(app, { route = app, token = 'alice', options = {} } = {}) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const opts = {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: { endpoint: `${SERVICE}/auth/${route}`, transport: 'ajax', headers, params: { user_id: 'forged' } },
    userAuthentication: { endpoint: `${SERVICE}/auth/${route}/user`, transport: 'ajax', headers },
    ...options,
  };
  // pusher-js 8 only uses a legacy `authorizer` when channelAuthorization is absent.
  if (options.authorizer) delete opts.channelAuthorization;
  const p = new Pusher(APPS[app].key, opts);
  p.errors = [];
  p.bind('pusher:error', (e) => p.errors.push(e));
  clients.push(p);
  return p;
}

export function server(app) {
  const a = APPS[app];
  return new PusherServer({
    appId: a.id, key: a.key, secret: a.secret, host: '127.0.0.1', port: wsPort, useTLS: false,
    encryptionMasterKeyBase64: a.master,
  });
}

/** Resolves with the subscription's outcome: succeeded, an auth error, or a server rejection. */
export function subscribe(pusher, name, timeoutMs = 8000) {
  return new Promise((resolve) => {
    const ch = pusher.subscribe(name);
    const errorsBefore = pusher.errors.length;
    const done = (r) => {
      clearInterval(poll);
      clearTimeout(timer);
      resolve({ channel: ch, ...r });
    };
    ch.bind('pusher:subscription_succeeded', (members) => done({ ok: true, members }));
    ch.bind('pusher:subscription_error', (e) => done({ ok: false, status: e.status, error: e }));
    const poll = setInterval(() => {
      if (pusher.errors.length > errorsBefore) done({ ok: false, serverError: pusher.errors[pusher.errors.length - 1] });
    }, 20);
    const timer = setTimeout(() => done({ ok: false, timeout: true }), timeoutMs);
  });
}

export function nextEvent(bindable, event, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeoutMs} ms`)), timeoutMs);
    bindable.bind(event, (data) => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

/**
 * The asyncpusher client (e2e/native/client.py) of `app`, authorizing in a native
 * client's request shape; `onReady` runs once it listens for `waitEvent`.
 * Resolves with the JSON lines it printed.
 */
export function nativeClient(app, shape, credential, channels, { waitEvent, onReady } = {}) {
  const cfg = { ws_port: wsPort, key: APPS[app].key, auth_url: `${SERVICE}/auth/${app}`, shape, credential, channels, wait_event: waitEvent };
  const child = start(PYTHON, [path.join(here, 'native/client.py'), JSON.stringify(cfg)]);
  const lines = [];
  let stderr = '';
  let buffered = '';
  child.stderr.on('data', (c) => (stderr += c));
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) {
      const line = JSON.parse(buffered.slice(0, i));
      buffered = buffered.slice(i + 1);
      lines.push(line);
      if (line.type === 'ready' && onReady) onReady();
    }
  });
  return child.exited.then(({ code }) => {
    if (code !== 0) throw new Error(`${shape} client exited ${code}: ${stderr.slice(-800)}`);
    return lines;
  });
}


export const clients = [];
export const procs = [];
export const suite = new Suite();
/** The host app (e2e/host.mjs), once run.mjs has started it. */
export let host = null;
export function setHost(h) {
  host = h;
}
