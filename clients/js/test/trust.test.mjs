// connect() treats the /client-config answer as untrusted input: a cache, a
// misrouted proxy or a compromised config must not send the app's auth requests
// (its X-CSRF-Token and Authorization headers) or its WebSocket anywhere the app
// did not allow, nor turn TLS off. A refused answer is an Error naming the field,
// the value and why, and nothing is ever sent where it pointed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../pusher-dual-auth.mjs';
import { Emitter, sleep, until } from './support.mjs';


const CONFIG_URL = 'https://svc.example/pusher/dual-auth/client-config';


/**
 * A pusher-js stand-in that records every instance (key and options) and, like
 * pusher-js, authorizes private channels through channelAuthorization's customHandler.
 */
function fakePusher() {
  const made = [];
  let sockets = 0;
  class FakePusher {
    constructor(key, options) {
      this.key = key;
      this.options = options;
      this.channels = new Map();
      this.user = { signin_requested: false };
      this.connection = new Emitter();
      this.connection.state = 'connecting';
      made.push(this);
      setTimeout(() => this.up(), 1);
    }
    up() {
      this.connection.socket_id = `${++sockets}.1`;
      this.connection.state = 'connected';
      this.connection.emit('connected');
      for (const ch of this.channels.values()) this.join(ch);
    }
    join(ch) {
      const ok = () => { ch.subscribed = true; ch.emit('pusher:subscription_succeeded', {}); };
      if (!/^(private|presence)-/.test(ch.name)) return setTimeout(ok, 1);
      const auth = this.options.channelAuthorization || {};
      if (typeof auth.customHandler !== 'function') return setTimeout(ok, 1);
      auth.customHandler({ socketId: this.connection.socket_id, channelName: ch.name }, (error) => {
        if (error) ch.emit('pusher:subscription_error', { status: 0, error: String(error) });
        else ok();
      });
    }
    subscribe(name) {
      if (!this.channels.has(name)) {
        const ch = new Emitter();
        Object.assign(ch, { name, subscribed: false, subscriptionPending: false });
        this.channels.set(name, ch);
        if (this.connection.state === 'connected') this.join(ch);
      }
      return this.channels.get(name);
    }
    channel(name) { return this.channels.get(name); }
    allChannels() { return [...this.channels.values()]; }
    switchCluster({ appKey }) { this.key = appKey; }
    disconnect() { this.connection.state = 'disconnected'; }
  }
  return { FakePusher, made };
}

/** A good answer, as the service sends it, with `over` laid on top. */
function answer(over = {}) {
  return {
    app: 'new', key: 'new-key', cluster: 'eu', client_options: {},
    channelAuthorization: { endpoint: '/pusher/dual-auth/auth/new' },
    userAuthentication: { endpoint: '/pusher/dual-auth/auth/new/user' },
    percent: 0, control_channel: 'pusher-dual-auth-rollout', version: 1,
    ...over,
  };
}

/** A fetch that answers /client-config with `body()` and everything else 200 {auth}; it logs every request. */
function fakeFetch(body) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    requests.push({ url: String(url), method: init.method || 'GET', headers: init.headers || {} });
    if (String(url).startsWith(CONFIG_URL)) return new Response(JSON.stringify(body()), { status: 200 });
    return new Response(JSON.stringify({ auth: 'new-key:sig' }), { status: 200 });
  };
  return { fetch, requests };
}

/**
 * connect() with `cfg` as the answer; if it connects, the app subscribes to a
 * private channel (an auth POST with its headers) and gets 30 ms to send it.
 */
async function attempt(cfg, extra = {}) {
  const { FakePusher, made } = fakePusher();
  const { fetch, requests } = fakeFetch(() => cfg);
  let error = null;
  let pusher = null;
  try {
    pusher = await connect(FakePusher, {
      configUrl: CONFIG_URL, fetch, random: () => 0, connectTimeoutMs: 500,
      options: { channelAuthorization: { headers: { 'X-CSRF-Token': 'csrf-secret' } } },
      ...extra,
    });
    pusher.subscribe('private-orders');
    await sleep(30);
  } catch (e) {
    error = e;
  } finally {
    if (pusher) pusher.disconnect();
  }
  return { error, pusher, made, requests, elsewhere: requests.filter((r) => !r.url.startsWith(CONFIG_URL)) };
}

/** The answer must be refused with a message matching every one of `says`, and nothing sent anywhere but /client-config. */
async function refused(cfg, says, extra = {}) {
  const r = await attempt(cfg, extra);
  assert.ok(r.error, `connect() should have refused ${JSON.stringify(cfg).slice(0, 300)}; it connected, and sent: ${JSON.stringify(r.elsewhere.map((q) => q.url))}`);
  assert.match(r.error.message, /^client-config: refused the answer from https:\/\/svc\.example\//);
  for (const s of [].concat(says)) assert.match(r.error.message, s);
  assert.deepEqual(r.elsewhere, [], 'no request to anything but /client-config');
  assert.equal(r.made.length, 0, 'no Pusher instance was created');
  return r.error;
}

/** The answer must be taken; resolves with the options the Pusher instance got, and the requests made. */
async function accepted(cfg, extra = {}) {
  const r = await attempt(cfg, extra);
  assert.equal(r.error, null, `refused: ${r.error && r.error.message}`);
  assert.equal(r.made.length, 1);
  return { options: r.made[0].options, requests: r.elsewhere };
}

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// Every shape of "send the auth POST elsewhere" a hostile answer can try.
const HOSTILE_ENDPOINTS = [
  ['another origin', 'https://collector.attacker.example/steal'],
  ['protocol-relative', '//collector.attacker.example/steal'],
  ['javascript:', 'javascript:alert(document.cookie)'],
  ['data:', 'data:text/html,<script>alert(1)</script>'],
  ['blob: (whose origin is the service\'s)', 'blob:https://svc.example/0b1e1d0e-0000-4000-8000-000000000000'],
  ['another scheme on the right host', 'ftp://svc.example/auth/new'],
  ['userinfo: good@evil', 'https://svc.example@collector.attacker.example/steal'],
  ['userinfo on the right host', 'https://user:pw@svc.example/auth/new'],
  ['a backslash read as a slash', '/\\collector.attacker.example/steal'],
  ['two backslashes', '\\\\collector.attacker.example/steal'],
  ['a leading space before //', ' //collector.attacker.example/steal'],
  ['a tab inside //', '/\t/collector.attacker.example/steal'],
  ['a newline inside //', '/\n/collector.attacker.example/steal'],
  ['a no-break space before //', '\u00a0//collector.attacker.example/steal'],
  ['http: on the right host (TLS dropped)', 'http://svc.example/auth/new'],
  ['another port on the right host', 'https://svc.example:8443/auth/new'],
  ['a host that only begins like the right one', 'https://svc.example.attacker.example/auth/new'],
  ['a scheme without slashes', 'http:collector.attacker.example/steal'],
  ['a percent-encoded dot in the host', 'https://collector%2eattacker.example/steal'],
  ['empty', ''],
];

test('an auth endpoint off configUrl\'s origin is refused, and nothing is sent to it', async (t) => {
  for (const [what, endpoint] of HOSTILE_ENDPOINTS) {
    await t.test(`channelAuthorization.endpoint: ${what}`, async () => {
      await refused(answer({ channelAuthorization: { endpoint } }), [/channelAuthorization\.endpoint/, new RegExp(esc(JSON.stringify(endpoint)))]);
    });
  }
  for (const [what, endpoint] of HOSTILE_ENDPOINTS.slice(0, 8)) {
    await t.test(`userAuthentication.endpoint: ${what}`, async () => {
      await refused(answer({ userAuthentication: { endpoint } }), [/userAuthentication\.endpoint/, new RegExp(esc(JSON.stringify(endpoint)))]);
    });
  }
});

test('the refusal says which field, what value and why', async () => {
  const e = await refused(answer({ channelAuthorization: { endpoint: 'https://collector.attacker.example/steal' } }), /allowedOrigins/);
  assert.match(e.message, /channelAuthorization\.endpoint "https:\/\/collector\.attacker\.example\/steal" goes to https:\/\/collector\.attacker\.example, not to https:\/\/svc\.example \(configUrl's origin\)/);
  const js = await refused(answer({ channelAuthorization: { endpoint: 'javascript:alert(1)' } }), /javascript:/);
  assert.match(js.message, /not http: or https:/);
  await refused(answer({ channelAuthorization: { endpoint: 'https://good:pw@svc.example/auth/new' } }), /"https:\/\/good:pw@svc\.example\/auth\/new" has credentials/);
});

test('endpoints on configUrl\'s origin are taken, resolved against configUrl, and the auth POST goes there', async () => {
  for (const endpoint of ['/pusher/dual-auth/auth/new', 'auth/new', 'https://svc.example/pusher/dual-auth/auth/new', 'https://SVC.example:443/pusher/dual-auth/auth/new']) {
    const { options, requests } = await accepted(answer({ channelAuthorization: { endpoint } }));
    const want = new URL(endpoint, CONFIG_URL).toString();
    assert.equal(options.channelAuthorization.endpoint, want);
    assert.deepEqual(requests.map((q) => [q.method, q.url, q.headers['X-CSRF-Token']]), [['POST', want, 'csrf-secret']]);
  }
});

test('allowedOrigins lets the endpoints be on the origins it lists, exactly', async () => {
  const extra = { allowedOrigins: ['https://auth.example.com'] };
  const { options, requests } = await accepted(answer({
    channelAuthorization: { endpoint: 'https://auth.example.com/pusher/auth' },
    userAuthentication: { endpoint: 'https://auth.example.com/pusher/auth/user' },
  }), extra);
  assert.equal(options.channelAuthorization.endpoint, 'https://auth.example.com/pusher/auth');
  assert.equal(options.userAuthentication.endpoint, 'https://auth.example.com/pusher/auth/user');
  assert.deepEqual(requests.map((q) => q.url), ['https://auth.example.com/pusher/auth']);
  // configUrl's own origin stays allowed.
  await accepted(answer(), extra);
  for (const endpoint of ['https://auth.example.com:8443/pusher/auth', 'http://auth.example.com/pusher/auth', 'https://evil.auth.example.com/pusher/auth',
    'https://auth.example.com@collector.attacker.example/', '//collector.attacker.example/']) {
    await refused(answer({ channelAuthorization: { endpoint } }), /channelAuthorization\.endpoint/, extra);
  }
});

test('allowedOrigins, allowedHosts that are not origins or hosts: connect rejects before any request', async () => {
  const bad = [
    [{ allowedOrigins: ['https://auth.example.com/pusher'] }, /allowedOrigins: "https:\/\/auth\.example\.com\/pusher" is not an origin/],
    [{ allowedOrigins: ['*'] }, /allowedOrigins: "\*" is not an origin/],
    [{ allowedOrigins: ['auth.example.com'] }, /allowedOrigins: "auth\.example\.com" is not an origin/],
    [{ allowedOrigins: ['javascript:alert(1)'] }, /allowedOrigins/],
    [{ allowedOrigins: 'https://auth.example.com' }, /allowedOrigins must be an array/],
    [{ allowedHosts: ['https://ws.example.com'] }, /allowedHosts: "https:\/\/ws\.example\.com" is not a host name/],
    [{ allowedHosts: ['ws.example.com:443'] }, /allowedHosts: "ws\.example\.com:443" is not a host name/],
    [{ allowedHosts: ['*'] }, /allowedHosts: "\*" is not a host name/],
    [{ allowedHosts: 'ws.example.com' }, /allowedHosts must be an array/],
  ];
  for (const [extra, says] of bad) {
    const r = await attempt(answer(), extra);
    assert.ok(r.error, `accepted ${JSON.stringify(extra)}`);
    assert.match(r.error.message, says);
    assert.deepEqual(r.requests, [], 'not even /client-config is read');
  }
});

test('client_options that move the connection, turn TLS off or carry auth settings are refused unless allowed', async (t) => {
  const cases = [
    [{ wsHost: 'collector.attacker.example' }, /client_options\.wsHost "collector\.attacker\.example" is not in allowedHosts/],
    [{ httpHost: 'collector.attacker.example' }, /client_options\.httpHost "collector\.attacker\.example" is not in allowedHosts/],
    [{ statsHost: 'collector.attacker.example', enableStats: true }, /client_options\.statsHost "collector\.attacker\.example" is not in allowedHosts/],
    [{ wsPort: 6001 }, /client_options\.wsPort 6001: .*allowedHosts/],
    [{ wssPort: 6002 }, /client_options\.wssPort 6002/],
    [{ httpPort: 80 }, /client_options\.httpPort 80/],
    [{ httpsPort: 443 }, /client_options\.httpsPort 443/],
    [{ wsPath: '/ws' }, /client_options\.wsPath "\/ws"/],
    [{ httpPath: '/pusher' }, /client_options\.httpPath "\/pusher"/],
    [{ forceTLS: false }, /client_options\.forceTLS false: .*allowNoTLS/],
    [{ enableStats: true }, /client_options\.enableStats true/],
    [{ disableStats: false }, /client_options\.disableStats false/],
    [{ authEndpoint: 'https://collector.attacker.example/steal' }, /client_options\.authEndpoint/],
    [{ auth: { headers: { 'X-Extra': '1' } } }, /client_options\.auth\b/],
    [{ authTransport: 'jsonp' }, /client_options\.authTransport/],
    [{ authorizer: 'x' }, /client_options\.authorizer/],
    [{ channelAuthorization: { endpoint: 'https://collector.attacker.example/steal', transport: 'jsonp' } }, /client_options\.channelAuthorization/],
    [{ userAuthentication: { endpoint: 'https://collector.attacker.example/steal' } }, /client_options\.userAuthentication/],
    [{ someFutureHostOption: 'collector.attacker.example' }, /client_options\.someFutureHostOption: not an option/],
    [{ enabledTransports: ['ws', 'carrier-pigeon'] }, /client_options\.enabledTransports/],
    [{ activityTimeout: 'soon' }, /client_options\.activityTimeout/],
  ];
  for (const [client_options, says] of cases) {
    await t.test(JSON.stringify(client_options), async () => {
      await refused(answer({ client_options }), says);
    });
  }
  await t.test('client_options that is not an object', async () => {
    await refused(answer({ client_options: 'wsHost=collector.attacker.example' }), /client_options must be an object/);
  });
  await t.test('every problem is named at once', async () => {
    const e = await refused(answer({ client_options: { wsHost: 'a.attacker.example', forceTLS: false } }), /wsHost/);
    assert.match(e.message, /forceTLS/);
  });
});

test('with allowedHosts, a host must be listed and ports and paths must be plain: nothing can smuggle another host in', async (t) => {
  const extra = { allowedHosts: ['ws.example.com'], allowNoTLS: true };
  const cases = [
    [{ wsHost: 'ws.example.com.attacker.example' }, /client_options\.wsHost "ws\.example\.com\.attacker\.example" is not in allowedHosts/],
    [{ wsHost: 'ws.example.com:443' }, /client_options\.wsHost "ws\.example\.com:443" is not a host name/],
    [{ wsHost: 'ws.example.com/x' }, /not a host name/],
    [{ wsHost: 'https://ws.example.com' }, /not a host name/],
    [{ wsHost: 'ws.example.com@collector.attacker.example' }, /not a host name/],
    [{ wsHost: 'collector.attacker.example#ws.example.com' }, /not a host name/],
    [{ wsHost: ' ws.example.com' }, /not a host name/],
    [{ wsHost: 'ws.example.com', httpHost: 'collector.attacker.example' }, /client_options\.httpHost "collector\.attacker\.example" is not in allowedHosts/],
    [{ wsHost: 'ws.example.com', wsPort: '443@collector.attacker.example' }, /client_options\.wsPort "443@collector\.attacker\.example" is not a port/],
    [{ wsHost: 'ws.example.com', wssPort: 0 }, /not a port/],
    [{ wsHost: 'ws.example.com', wssPort: 70000 }, /not a port/],
    [{ wsHost: 'ws.example.com', wssPort: 443.5 }, /not a port/],
    [{ wsHost: 'ws.example.com', wsPath: '@collector.attacker.example' }, /client_options\.wsPath "@collector\.attacker\.example" is not a path/],
    [{ wsHost: 'ws.example.com', wsPath: '.attacker.example/' }, /is not a path/],
    [{ wsHost: 'ws.example.com', httpPath: '/x?y#z' }, /is not a path/],
    [{ wsHost: 'ws.example.com', wsPath: '/\\collector.attacker.example' }, /is not a path/],
    [{ wsHost: 'ws.example.com', forceTLS: 'no' }, /client_options\.forceTLS "no"/],
  ];
  for (const [client_options, says] of cases) {
    await t.test(JSON.stringify(client_options), async () => {
      await refused(answer({ client_options }), says, extra);
    });
  }
});

test('cluster and control_channel cannot take the connection elsewhere or join a private channel', async (t) => {
  const cases = [
    [{ cluster: 'x:1@collector.attacker.example#' }, /cluster "x:1@collector\.attacker\.example#" is not a cluster name/],
    [{ cluster: 'collector.attacker.example/' }, /cluster/],
    [{ cluster: 42 }, /cluster/],
    [{ control_channel: 'presence-attacker-room' }, /control_channel "presence-attacker-room" is not a public channel/],
    [{ control_channel: 'private-orders' }, /control_channel/],
    [{ control_channel: 7 }, /control_channel/],
  ];
  for (const [over, says] of cases) {
    await t.test(JSON.stringify(over), async () => {
      await refused(answer(over), says);
    });
  }
});

test('allowed: the README\'s client_options with allowedHosts, a local sockudo with allowNoTLS, and values equal to the app\'s own', async () => {
  // README: client_options = { wsHost = "ws.example.com", wsPort = 443, forceTLS = true }
  const readme = { wsHost: 'ws.example.com', wsPort: 443, forceTLS: true };
  let { options } = await accepted(answer({ client_options: readme }), { allowedHosts: ['ws.example.com'] });
  assert.deepEqual([options.wsHost, options.wsPort, options.forceTLS], ['ws.example.com', 443, true]);
  ({ options } = await accepted(answer({ client_options: { ...readme, wsHost: 'WS.Example.COM', wssPort: '6001', wsPath: '/socket', httpHost: 'ws.example.com', httpPath: '/pusher' } }), { allowedHosts: ['ws.example.com'] }));
  assert.equal(options.wsHost, 'WS.Example.COM');
  assert.equal(options.wsPath, '/socket');
  // The rehearsal's built-in apps: a sockudo on loopback, without TLS.
  const local = { wsHost: '127.0.0.1', wsPort: 6001, forceTLS: false, enabledTransports: ['ws'] };
  ({ options } = await accepted(answer({ client_options: local }), { allowedHosts: ['127.0.0.1'], allowNoTLS: true }));
  assert.deepEqual([options.wsHost, options.wsPort, options.forceTLS, options.enabledTransports], ['127.0.0.1', 6001, false, ['ws']]);
  await refused(answer({ client_options: local }), /client_options\.forceTLS false/, { allowedHosts: ['127.0.0.1'] });
  ({ options } = await accepted(answer({ client_options: { wsHost: '[::1]', wsPort: 6001 } }), { allowedHosts: ['[::1]'] }));
  assert.equal(options.wsHost, '[::1]');
  // What the app passes itself may be repeated by the service: it changes nothing.
  const own = { wsHost: '127.0.0.1', wsPort: 6001, forceTLS: false, enabledTransports: ['ws'], disableStats: true };
  ({ options } = await accepted(answer({ client_options: { wsHost: '127.0.0.1', wsPort: 6001, forceTLS: false } }), { options: own }));
  assert.deepEqual([options.wsHost, options.wsPort, options.forceTLS], ['127.0.0.1', 6001, false]);
  await refused(answer({ client_options: { wsHost: '127.0.0.1', wsPort: 6666 } }), /client_options\.wsPort 6666/, { options: own });
  // Tuning, TLS on, stats off: taken as they are; cluster inside client_options is the answer's cluster's to set.
  ({ options } = await accepted(answer({ client_options: { activityTimeout: 30000, pongTimeout: 10000, unavailableTimeout: 10000,
    enabledTransports: ['ws', 'wss'], disabledTransports: ['xhr_polling'], ignoreNullOrigin: true, forceTLS: true, enableStats: false, disableStats: true, cluster: 'mt1' } })));
  assert.equal(options.activityTimeout, 30000);
  assert.equal(options.cluster, 'eu', 'the answer\'s cluster');
});

test('a refused answer read later (announcement, reconnect) never moves the client, and onSwitchFailed says why', async () => {
  const { FakePusher, made } = fakePusher();
  let cfg = answer({ app: 'old', key: 'old-key', channelAuthorization: { endpoint: '/auth/old' }, userAuthentication: { endpoint: '/auth/old/user' } });
  const { fetch, requests } = fakeFetch(() => cfg);
  const failures = [];
  const switches = [];
  const pusher = await connect(FakePusher, {
    // Re-reads are spread by delay × (0.5 + random()): -0.45 makes them 50, 100, 200, 400 ms apart.
    configUrl: CONFIG_URL, fetch, random: () => -0.45,
    options: { channelAuthorization: { headers: { 'X-CSRF-Token': 'csrf-secret' } } },
    onSwitch: (from, to) => switches.push(`${from}->${to}`),
    onSwitchFailed: (from, to, e) => failures.push([from, to, e.message]),
  });
  const ch = pusher.subscribe('private-orders');
  await until(() => ch.subscribed);
  cfg = answer({ version: 2, channelAuthorization: { endpoint: 'https://collector.attacker.example/steal' } });
  pusher.connection.emit('connected'); // a reconnect: the client re-reads its assignment
  const stolen = () => requests.filter((q) => q.url.includes('attacker'));
  await until(() => failures.length === 1 || switches.length > 0 || stolen().length > 0, 5000); // read 5 times, then told
  assert.deepEqual(stolen(), [], 'nothing sent to the refused endpoint');
  assert.deepEqual(switches, [], 'no move');
  assert.equal(failures.length, 1);
  assert.equal(failures[0][0], 'old');
  assert.equal(failures[0][1], 'new');
  assert.match(failures[0][2], /client-config: refused the answer .*channelAuthorization\.endpoint "https:\/\/collector\.attacker\.example\/steal"/);
  assert.equal(pusher.key, 'old-key', 'still on the old app');
  assert.equal(made.length, 1, 'no second connection to the app the refused answer named');
  assert.equal(requests.filter((q) => q.url.startsWith(CONFIG_URL)).length, 6, 'the first read, then five');
});
