// End-to-end suite: real pusher-js (Node and headless Chromium), laravel-echo and
// pusher-js-auth clients on a real Pusher-protocol server (sockudo) with two apps,
// authorized by pusher-dual-auth with a real host session check.
//
// Usage: node run.mjs   (SERVICE_BIN and SOCKUDO_BIN name the binaries)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { createHash, createHmac } from 'node:crypto';
import { Suite, assert, assertEqual, freePort, sleep, start, stop, waitForHttp } from './lib.mjs';
import { startHost } from './host.mjs';
import { connect, retryingAuth } from '../clients/js/pusher-dual-auth.mjs';
import { runbook } from './runbook.mjs';
import { storm } from './storm.mjs';
import { lossless } from './lossless.mjs';

const require = createRequire(import.meta.url);
const Pusher = require('pusher-js'); // the Node build, encryption-capable
const PusherServer = require('pusher');
const PusherBatchAuthorizer = require('pusher-js-auth');

const here = path.dirname(new URL(import.meta.url).pathname);
const root = path.resolve(here, '..');
const SERVICE_BIN = process.env.SERVICE_BIN || path.join(root, 'target/debug/pusher-dual-auth');
const SOCKUDO_BIN = process.env.SOCKUDO_BIN || 'sockudo';
// A Python with asyncpusher (scripts/e2e-setup makes one) for the native-client cases.
const PYTHON = process.env.PYTHON || 'python3';

/** A uid's sticky rollout bucket (0-9999): HMAC-SHA256 of the uid under a salt of the two app ids. */
function rolloutBucket(fromId, toId, uid) {
  const salt = createHash('sha256').update(`pusher-dual-auth rollout\n${fromId}\n${toId}`).digest();
  return createHmac('sha256', salt).update(uid).digest().readUInt32BE(0) % 10000;
}

const APPS = {
  // One master key for both apps: published ciphertext must decrypt on either (see [publish]).
  old: { id: '100001', key: 'old-app-key', secret: 'old-app-secret', master: Buffer.alloc(32, 1).toString('base64') },
  new: { id: '200002', key: 'new-app-key', secret: 'new-app-secret', master: Buffer.alloc(32, 1).toString('base64') },
};

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dual-auth-e2e-'));
const [wsPort, servicePort, hostPort, nginxPort, adminPort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
const NGINX = `http://127.0.0.1:${nginxPort}`;
const SERVICE = `http://127.0.0.1:${servicePort}`;
// Metrics and the status page live on the admin listener only.
const ADMIN = `http://127.0.0.1:${adminPort}`;
const HOST_ORIGIN = `http://127.0.0.1:${hostPort}`;
const serviceLogPath = path.join(work, 'service.log');

function sockudoConfig() {
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

function serviceConfig(rolloutPercent = 0) {
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
[publish]
app_id = "dual"
key = "publisher-key"
secret = "publisher-secret"
targets = ["old", "new"]
[rollout]
from = "old"
to = "new"
percent = ${rolloutPercent}
spread_secs = 3
${apps}`;
}

/** nginx with the repository's location snippets, in front of the service and the host. */
function nginxConfig() {
  const snippets = path.join(root, 'deploy/nginx');
  const locations = fs
    .readFileSync(path.join(snippets, 'pusher-dual-auth-locations.conf'), 'utf8')
    .replaceAll('/etc/nginx/snippets/', `${snippets}/`);
  fs.mkdirSync(path.join(work, 'nginx-tmp'), { recursive: true });
  const tmp = path.join(work, 'nginx-tmp');
  return `worker_processes 1;
pid ${work}/nginx.pid;
error_log ${work}/nginx-error.log;
events {}
http {
  access_log off;
  client_body_temp_path ${tmp}/body; proxy_temp_path ${tmp}/proxy; fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;
  upstream pusher_dual_auth { server 127.0.0.1:${servicePort}; keepalive 8; }
  server {
    listen 127.0.0.1:${nginxPort};
${locations}
    location / { proxy_pass ${HOST_ORIGIN}; }
  }
}
`;
}

/** Headless Debian Chromium for the browser cases (no network beyond loopback). */
async function launchChromium(profileDir) {
  const puppeteer = (await import('puppeteer-core')).default;
  return puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', `--user-data-dir=${profileDir}`],
  });
}

/** A pusher-js client of `app`, authorizing at /auth/<route> as `token`. */
function client(app, { route = app, token = 'alice', options = {} } = {}) {
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

function server(app) {
  const a = APPS[app];
  return new PusherServer({
    appId: a.id, key: a.key, secret: a.secret, host: '127.0.0.1', port: wsPort, useTLS: false,
    encryptionMasterKeyBase64: a.master,
  });
}

/** Resolves with the subscription's outcome: succeeded, an auth error, or a server rejection. */
function subscribe(pusher, name, timeoutMs = 8000) {
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

function nextEvent(bindable, event, timeoutMs = 5000) {
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
function nativeClient(app, shape, credential, channels, { waitEvent, onReady } = {}) {
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

const clients = [];
const procs = [];
const suite = new Suite();
let host;
// Unhandled rejections inside pusher-js (e.g. a bad channel_data) must fail the run, not hang it.
process.on('unhandledRejection', (e) => console.log(`unhandled rejection: ${e && e.stack ? e.stack : e}`));

try {
  const log = fs.createWriteStream(path.join(work, 'processes.log'));
  fs.writeFileSync(path.join(work, 'sockudo.toml'), sockudoConfig());
  fs.writeFileSync(path.join(work, 'service.toml'), serviceConfig());
  host = await startHost(hostPort, { pageDir: here });
  procs.push(start(SOCKUDO_BIN, ['--config', path.join(work, 'sockudo.toml')], { cwd: work, log }));
  const serviceLog = fs.createWriteStream(serviceLogPath);
  procs.push(start(SERVICE_BIN, ['serve', '--config', path.join(work, 'service.toml')], { log: serviceLog, env: { RUST_LOG: '' } }));
  // sockudo ignores a config it cannot parse and starts with no apps: check each app is there.
  for (const a of Object.values(APPS)) await waitForHttp(`http://127.0.0.1:${wsPort}/up/${a.id}`);
  await waitForHttp(`${SERVICE}/readyz`);
  fs.writeFileSync(path.join(work, 'nginx.conf'), nginxConfig());
  procs.push(start(process.env.NGINX_BIN || 'nginx', ['-p', work, '-c', path.join(work, 'nginx.conf'), '-g', 'daemon off;'], { log }));
  await waitForHttp(`${NGINX}/page.html`);
  console.log(`sockudo ws://127.0.0.1:${wsPort}, service ${SERVICE}, host ${HOST_ORIGIN}, work dir ${work}`);

  for (const app of ['old', 'new']) {
    await suite.test(`${app}: private channel subscribes`, async () => {
      const r = await subscribe(client(app), 'private-e2e');
      assert(r.ok, `not subscribed: ${JSON.stringify(r.serverError || r.status)}`);
    });

    await suite.test(`${app}: presence members show the host's identity, not the client's`, async () => {
      const r = await subscribe(client(app), 'presence-e2e');
      assert(r.ok, 'not subscribed');
      assertEqual(r.members.me, { id: 'alice', info: { name: 'Alice' } }, 'members.me');
      const forged = host.calls.filter((c) => c.channel_name === 'presence-e2e' && c.params.user_id === 'forged');
      assert(forged.length > 0, 'the client param reached the host only as a param');
    });

    await suite.test(`${app}: encrypted channel decrypts an event triggered by the official SDK`, async () => {
      const p = client(app);
      const r = await subscribe(p, 'private-encrypted-e2e');
      assert(r.ok, 'not subscribed');
      const got = nextEvent(r.channel, 'secret-event');
      await server(app).trigger('private-encrypted-e2e', 'secret-event', { msg: `hello ${app}` });
      assertEqual(await got, { msg: `hello ${app}` }, 'decrypted payload');
    });

    await suite.test(`${app}: signin, then an event sent to that user`, async () => {
      const p = client(app);
      p.signin();
      const deadline = Date.now() + 8000;
      while (!(p.user.serverToUserChannel && p.user.serverToUserChannel.subscribed) && Date.now() < deadline) await sleep(20);
      assertEqual(p.user.user_data, { id: 'alice', user_info: { name: 'Alice' }, watchlist: ['bob'] }, 'user_data');
      assert(p.user.serverToUserChannel && p.user.serverToUserChannel.subscribed, 'server-to-user channel subscribed');
      const got = nextEvent(p.user, 'direct');
      await server(app).sendToUser('alice', 'direct', { n: 1 });
      assertEqual(await got, { n: 1 }, 'event sent to user');
    });

    await suite.test(`${app}: a denied user gets subscription_error with status 403`, async () => {
      const r = await subscribe(client(app, { token: 'mallory' }), 'private-e2e');
      assertEqual([r.ok, r.status], [false, 403], 'outcome');
      const r2 = await subscribe(client(app), 'private-denied-e2e');
      assertEqual([r2.ok, r2.status], [false, 403], 'channel refused by the host');
      const r3 = await subscribe(client(app, { token: null }), 'presence-e2e');
      assertEqual([r3.ok, r3.status], [false, 403], 'no session');
    });
  }

  // Native clients: a real PyPI client (asyncpusher, protocol 7) over sockudo, its
  // authorization sent the way each native client sends it, byte for byte.
  const nativeCases = [
    // [shape, credential, private channel name]
    ['python', { cookie: 'session=alice' }, 'private-native-python'],
    // Swift puts the channel name in the body unencoded: = @ , . ; travel raw.
    ['swift', { cookie: 'session=alice' }, 'private-native-swift=ios@3,2.1;x'],
    ['java', { bearer: 'alice' }, 'private-native-java=android@2,4.0;x'],
  ];
  for (const app of ['old', 'new']) {
    for (const [shape, credential, privateName] of nativeCases) {
      await suite.test(`${app}: ${shape}-shaped native client subscribes to private and presence, receives an event`, async () => {
        const presence = `presence-native-${shape}`;
        const lines = await nativeClient(app, shape, credential, [privateName, presence], {
          waitEvent: { channel: privateName, event: 'native-event' },
          onReady: () => server(app).trigger(privateName, 'native-event', { shape, app }),
        });
        const auths = lines.filter((l) => l.type === 'auth');
        assertEqual(auths.map((a) => a.status), [200, 200], `auth statuses ${JSON.stringify(auths)}`);
        const subscribed = lines.filter((l) => l.type === 'subscribed').map((l) => l.channel);
        assertEqual(subscribed, [privateName, presence], `subscribed (${JSON.stringify(lines)})`);
        const members = lines.find((l) => l.channel === presence && l.type === 'subscribed').data.presence;
        assertEqual(members.hash.alice, { name: 'Alice' }, 'presence member from the host');
        const event = lines.find((l) => l.type === 'event');
        assertEqual(event && event.data, { shape, app }, 'event published through REST');
        const seen = host.calls.filter((c) => c.channel_name === privateName);
        assert(seen.length > 0 && seen.every((c) => c.token === 'alice'), 'the host saw the raw channel name and the credential');
      }, 40000);
    }

    await suite.test(`${app}: a denied native client gets a bare 403 and no subscription`, async () => {
      for (const [shape, credential] of [['swift', { cookie: 'session=mallory' }], ['java', { bearer: 'mallory' }]]) {
        const lines = await nativeClient(app, shape, credential, ['private-native-denied-check']);
        const auth = lines.find((l) => l.type === 'auth');
        assertEqual(auth && auth.status, 403, `${shape}: ${JSON.stringify(lines)}`);
        assert(!/"auth"/.test(auth.body), `${shape}: nothing signed on a 403: ${auth.body}`);
        assert(!lines.some((l) => l.type === 'subscribed'), `${shape}: not subscribed`);
      }
    }, 40000);
  }

  await suite.test('a client of one app pointed at the other app\'s route is rejected by the server', async () => {
    for (const [app, route] of [['old', 'new'], ['new', 'old']]) {
      const r = await subscribe(client(app, { route }), 'private-cross');
      assert(!r.ok && r.serverError, `${app} via /auth/${route} should be rejected by sockudo, got ${JSON.stringify(r.status)}`);
    }
  });

  await suite.test('a REST trigger reaches subscribers of its own app only', async () => {
    const oldC = client('old');
    const newC = client('new');
    const [a, b] = await Promise.all([subscribe(oldC, 'private-iso'), subscribe(newC, 'private-iso')]);
    assert(a.ok && b.ok, 'both subscribed');
    const seen = { old: [], new: [] };
    a.channel.bind('ping', (d) => seen.old.push(d.from));
    b.channel.bind('ping', (d) => seen.new.push(d.from));
    await server('old').trigger('private-iso', 'ping', { from: 'old' });
    await server('new').trigger('private-iso', 'ping', { from: 'new' });
    await sleep(500);
    assertEqual(seen, { old: ['old'], new: ['new'] }, 'deliveries');
  });

  await suite.test('laravel-echo 2.5: private and presence channels on both apps', async () => {
    const { default: Echo } = await import('laravel-echo');
    for (const app of ['old', 'new']) {
      const echo = new Echo({
        broadcaster: 'pusher', key: APPS[app].key, cluster: 'mt1', wsHost: '127.0.0.1', wsPort, forceTLS: false,
        enabledTransports: ['ws'], disableStats: true, authEndpoint: `${SERVICE}/auth/${app}`,
        auth: { headers: { Authorization: 'Bearer bob' } }, Pusher,
      });
      clients.push(echo.connector.pusher);
      const got = new Promise((resolve) => echo.private('orders').listen('.order-shipped', resolve));
      const members = new Promise((resolve) => echo.join('room').here(resolve));
      // Echo's here() lists each member's user_info.
      assertEqual(await members, [{ name: 'Bob' }], `${app} presence here()`);
      await sleep(200); // the private subscription was sent first; give it a beat
      await server(app).trigger('private-orders', 'order-shipped', { id: 7 });
      assertEqual(await got, { id: 7 }, `${app} private event`);
      echo.disconnect();
    }
  });

  await suite.test('pusher-js-auth 4.0: one batch request, per-channel results', async () => {
    const p = client('new', {
      options: {
        authEndpoint: `${SERVICE}/auth/new`,
        auth: { headers: { Authorization: 'Bearer alice' } },
        authorizer: PusherBatchAuthorizer,
      },
    });
    const before = host.calls.length;
    const [a, b, c] = await Promise.all(
      ['private-batch-a', 'presence-batch-b', 'private-denied-batch-c'].map((n) => subscribe(p, n)),
    );
    assert(a.ok, 'private-batch-a subscribed');
    assert(b.ok, 'presence-batch-b subscribed');
    assertEqual(b.members.me, { id: 'alice', info: { name: 'Alice' } }, 'batch presence identity');
    assert(!c.ok && !c.serverError, 'the denied channel failed at the auth step');
    const calls = host.calls.slice(before).filter((x) => x.channel_name && x.channel_name.includes('batch'));
    assertEqual(calls.length, 3, 'one host check per channel');
    assertEqual(new Set(calls.map((x) => x.requestId)).size, 1, 'all three came in one HTTP request');
  });

  await suite.test('headless Chromium: pusher-js cross-origin through CORS, both apps', async () => {
    const browser = await launchChromium(path.join(work, 'chromium'));
    try {
      const page = await browser.newPage();
      const keys = encodeURIComponent(JSON.stringify({ old: APPS.old.key, new: APPS.new.key }));
      await page.goto(`${HOST_ORIGIN}/page.html?service=${encodeURIComponent(SERVICE)}&ws=${wsPort}&keys=${keys}`);
      await page.waitForFunction('window.__results !== null', { timeout: 30000 });
      const results = await page.evaluate('window.__results');
      await page.screenshot({ path: path.join(work, 'browser.png') });
      for (const app of ['old', 'new']) {
        assert(results[app].private.ok, `${app} private: ${JSON.stringify(results[app].private)}`);
        assertEqual(results[app].presence.me, { id: 'alice', info: { name: 'Alice' } }, `${app} presence`);
        assertEqual(results[app].denied, { ok: false, status: 403 }, `${app} denied (403 readable cross-origin)`);
      }
    } finally {
      await browser.close();
    }
  }, 60000);

  await suite.test('publish once through the service: every client of both apps gets each event exactly once', async () => {
    const publisher = new PusherServer({
      appId: 'dual', key: 'publisher-key', secret: 'publisher-secret', host: '127.0.0.1', port: servicePort, useTLS: false,
      encryptionMasterKeyBase64: APPS.old.master,
    });
    const subs = [];
    for (const app of ['old', 'new']) {
      const p = client(app);
      for (const name of ['private-fan', 'presence-fan', 'private-encrypted-fan']) {
        const r = await subscribe(p, name);
        assert(r.ok, `${app} ${name} subscribed`);
        const got = [];
        r.channel.bind('fanned', (d) => got.push(d));
        subs.push({ app, name, got });
      }
    }
    const res = await publisher.trigger(['private-fan', 'presence-fan'], 'fanned', { n: 1 });
    assertEqual(res.status, 200, 'trigger status');
    await publisher.trigger('private-encrypted-fan', 'fanned', { n: 2 });
    await publisher.triggerBatch([{ channel: 'private-fan', name: 'fanned', data: { n: 3 } }]);
    await sleep(500);
    for (const s of subs) {
      const want = s.name === 'private-encrypted-fan' ? [{ n: 2 }] : s.name === 'private-fan' ? [{ n: 1 }, { n: 3 }] : [{ n: 1 }];
      assertEqual(s.got, want, `${s.app} ${s.name}`);
    }
    // Queries are merged: presence users of both apps, channel lists united.
    const users = await (await publisher.get({ path: '/channels/presence-fan/users' })).json();
    assertEqual(users, { users: [{ id: 'alice' }] }, 'one user, present through both apps, counted once');
    const channels = await (await publisher.get({ path: '/channels', params: { filter_by_prefix: 'presence-' } })).json();
    assert('presence-fan' in channels.channels, JSON.stringify(channels));
    // A request signed with the wrong secret is refused before anything is forwarded.
    const forged = new PusherServer({ appId: 'dual', key: 'publisher-key', secret: 'nope', host: '127.0.0.1', port: servicePort, useTLS: false });
    const err = await forged.trigger('private-fan', 'fanned', { n: 9 }).catch((e) => e);
    assertEqual(err.status, 401, 'forged publish');
    await sleep(300);
    assert(subs.every((s) => !s.got.some((d) => d.n === 9)), 'the forged event reached nobody');
  });

  await suite.test('webhooks from both apps are merged for the host, then the status page says the old app drained', async () => {
    const verifier = new PusherServer({ appId: 'x', key: 'host-webhook-key', secret: 'host-webhook-secret', host: '127.0.0.1', port: 1 });
    const events = () =>
      host.webhooks.flatMap((w) => {
        const hook = verifier.webhook({ headers: w.headers, rawBody: w.rawBody });
        assert(hook.isValid(), 'the official SDK verifies every forwarded webhook');
        return hook.getEvents().filter((e) => e.channel === 'presence-wh');
      });
    const oldC = client('old');
    const newC = client('new');
    assert((await subscribe(oldC, 'presence-wh')).ok, 'old subscribed');
    assert((await subscribe(newC, 'presence-wh')).ok, 'new subscribed');
    await sleep(500);
    const joined = events().map((e) => e.name).sort();
    assertEqual(joined, ['channel_occupied', 'member_added'], 'occupied and joined once, though present through both apps');
    oldC.disconnect(); // the old app's side empties: sockudo reports it ~3 s later
    await sleep(4000);
    assertEqual(events().length, 2, 'still occupied and present through the new app: nothing more');
    newC.disconnect();
    await sleep(4000);
    const all = events().map((e) => e.name).sort();
    assertEqual(all, ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed'], 'vacated once, by the last app');

    // The status page, in Chromium: key numbers match /status, and the old app is drained
    // once its window (3 s here) passes without old-app auths or occupancy.
    for (const c of clients) {
      try { c.disconnect(); } catch {}
    }
    await sleep(5000);
    const json = await (await fetch(`${ADMIN}/status`)).json();
    const browser = await launchChromium(path.join(work, 'chromium3'));
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 800, height: 480 });
      await page.goto(`${ADMIN}/status.html`);
      await page.waitForSelector('body[data-loaded="yes"]', { timeout: 10000 });
      const shown = await page.evaluate(() => ({
        verdict: document.getElementById('verdict').textContent,
        old: document.querySelector('tr[data-app="old"] .signed').textContent,
        new: document.querySelector('tr[data-app="new"] .signed').textContent,
        oldOccupied: document.querySelector('tr[data-app="old"] .occupied').textContent,
        rolloutTarget: document.getElementById('rollout').dataset.target,
        clientGroups: [...document.querySelectorAll('#clients tr')].map((tr) => tr.dataset.group),
        yLabels: [...document.querySelectorAll('#chart .y-label')].map((t) => t.textContent),
        xLabels: [...document.querySelectorAll('#chart .x-label')].map((t) => t.textContent),
        points: [...document.querySelectorAll('#chart .share-point title')].map((t) => t.textContent),
        target: !!document.querySelector('#chart .rollout-target'),
      }));
      await page.screenshot({ path: path.join(work, 'status.png'), fullPage: true });
      assertEqual(shown.old, String(json.apps.old.auth_signed_total), 'old signed count on the page');
      assertEqual(shown.new, String(json.apps.new.auth_signed_total), 'new signed count on the page');
      assertEqual(shown.oldOccupied, '0', 'old occupancy on the page');
      assertEqual(shown.rolloutTarget, String(json.rollout.percent), 'the rollout target on the page');
      assertEqual(shown.clientGroups, json.clients.map((c) => c.group), 'the client builds on the page, in /status order');
      assert(shown.clientGroups.includes('Chrome 156') || shown.clientGroups.some((g) => g.startsWith('Chrome ')), `Chromium is a group: ${shown.clientGroups}`);
      assert(json.drain.drained && shown.verdict.includes('"old" app drained'), `verdict: ${shown.verdict}`);
      // The chart reads as numbers: a % axis, a clock axis, each point's counts, the target.
      assertEqual(shown.yLabels, ['0%', '25%', '50%', '75%', '100%'], 'share axis');
      assert(shown.xLabels.length === 5 && shown.xLabels.every((t) => /^\d{2}:\d{2}:\d{2}$/.test(t)), `time axis: ${shown.xLabels}`);
      assert(shown.points.length > 0 && shown.points.every((t) => /^\d{2}:\d{2}:\d{2} · (old|new): \d+% \(\d+ of \d+ auths\)$/.test(t)), `points: ${shown.points.slice(0, 3)}`);
      for (const t of shown.points) {
        const [, pct, n, total] = /(\d+)% \((\d+) of (\d+)/.exec(t).map(Number);
        assertEqual(pct, Math.round((100 * n) / total), `a point's share matches its counts: ${t}`);
      }
      assert(shown.target, 'the rollout target line');
      delete shown.points;
      console.log(`     status page: ${JSON.stringify(shown)} (screenshot ${path.join(work, 'status.png')})`);
    } finally {
      await browser.close();
    }
  }, 60000);

  await suite.test('nginx recipe: the cookie reaches the host check, the proxy\'s X-Forwarded-For is honoured', async () => {
    const before = host.calls.length;
    const res = await fetch(`${NGINX}/pusher/auth-new`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: 'session=bob; theme=dark' },
      body: 'socket_id=1234.1234&channel_name=presence-nginx',
    });
    assertEqual(res.status, 200, 'status through nginx');
    const body = await res.json();
    assertEqual(JSON.parse(body.channel_data), { user_id: 'bob', user_info: { name: 'Bob' } }, 'identity from the cookie');
    const call = host.calls.slice(before).find((c) => c.channel_name === 'presence-nginx');
    assertEqual(call.token, 'bob', 'the cookie reached the session check');
    assertEqual(call.xff, '127.0.0.1, 127.0.0.1', 'client (as nginx saw it), then nginx');
    assert(/^[0-9a-f]{32}$/.test(call.requestId), `nginx's $request_id is forwarded: ${call.requestId}`);
    const old = await fetch(`${NGINX}/pusher/auth`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: 'session=bob' },
      body: 'socket_id=1234.1234&channel_name=private-nginx',
    });
    assertEqual((await old.json()).auth.split(':')[0], APPS.old.key, '/pusher/auth is the old app');
    // The rollout assignment through the same origin; query kept; plain http here, so no Secure.
    const assigned = await fetch(`${NGINX}/pusher/client-config?uid=bob`);
    assertEqual(assigned.status, 200, '/pusher/client-config through nginx');
    const endpoint = (await assigned.json()).channelAuthorization.endpoint;
    assert(/^\/pusher\/dual-auth\/auth\/(old|new)$/.test(endpoint), `an endpoint reachable through nginx: ${endpoint}`);
    const anonymous = await fetch(`${NGINX}/pusher/client-config`);
    const setCookie = anonymous.headers.get('set-cookie') || '';
    assert(setCookie.startsWith('pusher_dual_auth_rid=') && !/;\s*Secure/i.test(setCookie), `cookie over plain http: ${setCookie}`);
  });

  await suite.test('headless Chromium: same origin through nginx, the session cookie flows (no CORS)', async () => {
    const browser = await launchChromium(path.join(work, 'chromium2'));
    try {
      const page = await browser.newPage();
      const keys = encodeURIComponent(JSON.stringify({ old: APPS.old.key, new: APPS.new.key }));
      await page.goto(`${NGINX}/page.html?mode=cookie&ws=${wsPort}&keys=${keys}`);
      await page.waitForFunction('window.__results !== null', { timeout: 30000 });
      const results = await page.evaluate('window.__results');
      for (const app of ['old', 'new']) {
        assert(results[app].private.ok, `${app} private: ${JSON.stringify(results[app].private)}`);
        assertEqual(results[app].presence.me, { id: 'alice', info: { name: 'Alice' } }, `${app} presence`);
        assertEqual(results[app].denied, { ok: false, status: 403 }, `${app} denied`);
      }
    } finally {
      await browser.close();
    }
  }, 60000);

  await suite.test('rollout: 100 live pusher-js clients move to the new app at 50 %, without a new object, and back at 0 %', async () => {
    const N = 100;
    const roll = [];
    for (let i = 0; i < N; i++) {
      const switches = [];
      // Every fifth client reaches the service only through the nginx recipe.
      const viaNginx = i % 5 === 0;
      const pusher = await connect(Pusher, {
        configUrl: viaNginx ? `${NGINX}/pusher/dual-auth/client-config` : `${SERVICE}/client-config`,
        uid: `roll-${i}`,
        onSwitch: (from, to) => switches.push(`${from}->${to}`),
        options: {
          wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
          channelAuthorization: { transport: 'ajax', headers: { Authorization: 'Bearer alice' } },
        },
      });
      pusher.errors = [];
      clients.push(pusher);
      const priv = pusher.subscribe('private-roll');
      const pres = pusher.subscribe('presence-roll');
      const got = [];
      priv.bind('rolled', (d) => got.push(d));
      roll.push({ i, pusher, priv, pres, got, switches, viaNginx });
    }
    const onApp = (key) => roll.filter((r) => r.pusher.key === APPS[key].key).length;
    const allSubscribed = () => roll.every((r) => r.priv.subscribed && r.pres.subscribed);
    const waitFor = async (what, ok, ms) => {
      const until = Date.now() + ms;
      while (!ok()) {
        if (Date.now() > until) throw new Error(`timed out: ${what}`);
        await sleep(100);
      }
    };
    await waitFor('all subscribed at 0 %', allSubscribed, 20000);
    assertEqual(onApp('old'), N, 'at 0 % everyone is on old');
    // One Chromium page too, as a user whose bucket (fixed whatever the percent) is below 50 %.
    // The service does not say a uid's bucket; it is the README's documented formula.
    let uid = null;
    for (let k = 0; uid === null; k++) {
      if (rolloutBucket(APPS.old.id, APPS.new.id, `browser-${k}`) < 5000) uid = `browser-${k}`;
    }
    const browser = await launchChromium(path.join(work, 'chromium-rollout'));
    clients.push({ disconnect: () => browser.close() }); // closed by the suite's cleanup if a step fails
    const page = await browser.newPage();
    await page.goto(`${HOST_ORIGIN}/rollout.html?service=${encodeURIComponent(SERVICE)}&ws=${wsPort}&uid=${uid}`);
    await page.waitForFunction('window.__roll && window.__roll.ready && window.__roll.subscribed', { timeout: 20000 });
    assertEqual(await page.evaluate('window.__roll.key'), APPS.old.key, 'the page starts on old');
    // What the service assigns each uid at 50 % (the same bucket every time).
    const objects = roll.map((r) => r.pusher);

    fs.writeFileSync(path.join(work, 'service.toml'), serviceConfig(50));
    const started = Date.now();
    await sleep(1000); // the reload, then the announcement
    const expected = [];
    for (const r of roll) expected.push((await (await fetch(`${SERVICE}/client-config?uid=roll-${r.i}`)).json()).app);
    const wantNew = expected.filter((a) => a === 'new').length;
    assert(wantNew >= 35 && wantNew <= 65, `50 % assigns ${wantNew} of ${N} to new`);
    await waitFor('the assigned clients moved', () => onApp('new') === wantNew, 3000 + 5000);
    const moveSecs = ((Date.now() - started) / 1000).toFixed(1);
    await waitFor('all re-subscribed after the switch', allSubscribed, 10000);
    // Behind the proxy the helper was handed endpoints under its prefix, on the app it is on now.
    for (const r of roll.filter((r) => r.viaNginx)) {
      const app = r.pusher.key === APPS.new.key ? 'new' : 'old';
      assertEqual(r.pusher.options.channelAuthorization.endpoint, `${NGINX}/pusher/dual-auth/auth/${app}`, `roll-${r.i} endpoint`);
    }
    assert(roll.some((r) => r.viaNginx && r.pusher.key === APPS.new.key), 'a client behind nginx moved to new');
    roll.forEach((r, k) => assertEqual(r.pusher.key === APPS.new.key ? 'new' : 'old', expected[k], `roll-${r.i} on its assigned app`));
    assert(roll.every((r, k) => r.pusher === objects[k]), 'the same Pusher objects');
    // onSwitch comes once the move is complete (the second connection closed after its grace).
    const movedOnce = () => roll.filter((r) => r.switches.length === 1 && r.switches[0] === 'old->new').length;
    await waitFor('onSwitch once per moved client', () => movedOnce() === wantNew, 5000);
    // The page moved too, without a reload, and its private channel works on the new app.
    await page.waitForFunction(`window.__roll.key === ${JSON.stringify(APPS.new.key)} && window.__roll.subscribed`, { timeout: 10000 });
    await page.waitForFunction('window.__roll.switches.length === 1', { timeout: 5000 });
    assertEqual(await page.evaluate('window.__roll.switches'), ['old->new'], 'the page switched once');

    // An event published once through the fan-out reaches every client exactly once, on either app.
    const publisher = new PusherServer({ appId: 'dual', key: 'publisher-key', secret: 'publisher-secret', host: '127.0.0.1', port: servicePort, useTLS: false });
    await publisher.trigger('private-roll', 'rolled', { n: 1 });
    await publisher.trigger('private-roll-browser', 'rolled', { n: 2 });
    await page.waitForFunction('window.__roll.events.length === 1', { timeout: 5000 });
    await waitFor('the event everywhere', () => roll.every((r) => r.got.length >= 1), 5000);
    await sleep(300);
    assert(roll.every((r) => r.got.length === 1), 'exactly once each');

    // Rollback: percent 0 brings everyone back to old.
    fs.writeFileSync(path.join(work, 'service.toml'), serviceConfig(0));
    await waitFor('everyone back on old', () => onApp('old') === N, 1000 + 3000 + 5000);
    await waitFor('all re-subscribed after the rollback', allSubscribed, 10000);
    await page.waitForFunction(`window.__roll.key === ${JSON.stringify(APPS.old.key)} && window.__roll.subscribed`, { timeout: 10000 });
    await page.screenshot({ path: path.join(work, 'rollout.png') });
    // The status page marks both changes (to 50 %, back to 0 %) on its timeline.
    await sleep(1500); // one more sample after the rollback
    await page.goto(`${ADMIN}/status.html`);
    await page.waitForSelector('body[data-loaded="yes"]', { timeout: 10000 });
    const marks = await page.evaluate(() => [...document.querySelectorAll('line.rollout-change')].length);
    const labels = await page.evaluate(() => [...document.querySelectorAll('#chart text')].map((t) => t.textContent));
    await page.screenshot({ path: path.join(work, 'status-rollout.png'), fullPage: true });
    assert(marks >= 2 && labels.includes('→ 50%') && labels.includes('→ 0%'), `rollout changes on the status page: ${marks} marks, ${labels}`);
    await browser.close();
    console.log(`     rollout: ${wantNew}/${N} moved to new within ${moveSecs} s of the reload (spread 3 s), all ${N} back on old after rollback; the Chromium page moved and came back too`);
  }, 90000);

  await lossless({ suite, APPS, wsPort, SERVICE, ADMIN, HOST_ORIGIN, servicePort, work, serviceConfig, Pusher, PusherServer, connect, clients, launchChromium });
  await runbook({ suite, APPS, wsPort, HOST_ORIGIN, SERVICE_BIN, root, work, Pusher, PusherServer, connect, clients });
  await storm({ suite, APPS, wsPort, HOST_ORIGIN, host, SERVICE_BIN, work, Pusher, connect, retryingAuth, clients });

  await suite.test('the service log holds no secrets, credentials or signatures', async () => {
    const text = fs.readFileSync(serviceLogPath, 'utf8');
    assert(text.includes('"outcome":"signed"'), 'the log has decision lines');
    const banned = ['old-app-secret', 'new-app-secret', APPS.old.master, APPS.new.master, 'Bearer', 'alice"}'];
    for (const s of banned) assert(!text.includes(s), `log contains ${s}`);
    assert(!/[0-9a-f]{64}/.test(text), 'log contains a 64-hex signature');
  });
} catch (e) {
  console.log(`setup failed: ${e && e.stack ? e.stack : e}`);
  suite.failed++;
} finally {
  for (const c of clients) {
    try { c.disconnect(); } catch {}
  }
  await sleep(100);
  for (const p of procs.reverse()) await stop(p);
  if (host) host.server.close();
  suite.summary();
  if (suite.failed && process.env.CI) console.log(`logs kept in ${work}`);
  process.exit(suite.failed ? 1 : 0);
}
