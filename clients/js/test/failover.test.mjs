// Failover against a fake pusher-js whose apps can go down (the connection goes
// 'connecting', then 'unavailable'), or black-hole it (connected, but nothing
// comes, pings unanswered), and a fake /client-config that can name a failover:
// the watchdog's suspicion (down for afterMs; silent, pinged, no pong), a pong
// clearing it, the re-read schedule (fake timers), a plain move off a dead app
// (one onFailover, no second subscription_succeeded, member differences told), a
// make-before-break move while the connection works, a return, flapping (no
// move), `failover: false`, and the app's own disconnect().
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../pusher-dual-auth.mjs';
import { Emitter, FakeConnection, FakeMembers, sleep, until } from './support.mjs';

/** Two apps (old-key, new-key) and the pusher-js instances on them. */
function fakeWorld() {
  const instances = new Set();
  let sockets = 0;
  /** Per app key: up (accepts connections), silent (black-holed), its presence members, how late its pong is. */
  const apps = {
    'old-key': { up: true, silent: false, members: {}, pongDelayMs: 1 },
    'new-key': { up: true, silent: false, members: {}, pongDelayMs: 1 },
  };
  const state = { created: 0, pings: 0 };

  class FakeChannel extends Emitter {
    constructor(name) {
      super();
      Object.assign(this, { name, subscribed: false, subscriptionPending: false });
      if (name.startsWith('presence-')) this.members = new FakeMembers();
    }
  }

  class FakePusher {
    constructor(key, options) {
      Object.assign(this, { key, options, channels: new Map(), user: { signin_requested: false }, attempt: 0 });
      this.connection = new FakeConnection();
      // As pusher-js: its channels are reset on 'connecting' and 'disconnected' (after state_change).
      const reset = () => {
        for (const ch of this.channels.values()) {
          Object.assign(ch, { subscribed: false, subscriptionPending: false });
          if (ch.members) ch.members.reset();
        }
      };
      this.connection.bind('connecting', reset);
      this.connection.bind('disconnected', reset);
      state.created++;
      instances.add(this);
      this.open();
    }
    /** A connection attempt: connected 5 ms later if the app is up, else 'unavailable'. */
    open() {
      const attempt = ++this.attempt;
      this.connection.setState('connecting');
      setTimeout(() => {
        if (attempt !== this.attempt || this.connection.state === 'disconnected') return;
        if (!apps[this.key].up) return this.connection.setState('unavailable');
        this.connection.socket_id = `${++sockets}.${sockets}`;
        this.connection.setState('connected');
        for (const ch of this.channels.values()) this.join(ch);
      }, 5);
    }
    join(ch) {
      ch.subscriptionPending = true;
      const socket = this.connection.socket_id;
      setTimeout(() => {
        if (this.connection.state !== 'connected' || this.connection.socket_id !== socket) return;
        Object.assign(ch, { subscriptionPending: false, subscribed: true });
        if (ch.members) ch.members.set(apps[this.key].members[ch.name] || {});
        this.connection.emit('message', { event: 'pusher_internal:subscription_succeeded', channel: ch.name });
        ch.emit('pusher:subscription_succeeded', ch.members || {});
      }, 3);
    }
    subscribe(name) {
      if (!this.channels.has(name)) {
        this.channels.set(name, new FakeChannel(name));
        if (this.connection.state === 'connected') this.join(this.channels.get(name));
      }
      return this.channels.get(name);
    }
    channel(name) { return this.channels.get(name); }
    allChannels() { return [...this.channels.values()]; }
    send_event(event) {
      if (event !== 'pusher:ping' || this.connection.state !== 'connected') return false;
      state.pings++;
      const app = apps[this.key];
      const socket = this.connection.socket_id;
      if (!app.silent) {
        setTimeout(() => {
          if (this.connection.socket_id === socket && !app.silent) this.connection.emit('message', { event: 'pusher:pong', data: {} });
        }, app.pongDelayMs);
      }
      return true;
    }
    switchCluster({ appKey }) {
      this.key = appKey;
      this.open();
    }
    connect() { this.open(); }
    disconnect() {
      this.attempt++;
      this.connection.setState('disconnected');
    }
  }

  /** To every instance on `key` connected and subscribed to `channel` (a black-holed one gets nothing). */
  const publish = (key, channel, event, data) => {
    for (const p of instances) {
      const ch = p.key === key && p.connection.state === 'connected' && !apps[key].silent && p.channels.get(channel);
      if (!ch || !ch.subscribed) continue;
      p.connection.emit('message', { event, channel, data });
      ch.emit(event, data);
    }
  };
  /** The app goes down: its connections drop (and retry, in vain while it is down). */
  const down = (key) => {
    apps[key].up = false;
    for (const p of instances) if (p.key === key && p.connection.state === 'connected') p.open();
  };
  /** The app is back: connections waiting on it connect. */
  const up = (key) => {
    apps[key].up = true;
    apps[key].silent = false;
    for (const p of instances) if (p.key === key && ['connecting', 'unavailable'].includes(p.connection.state)) p.open();
  };
  return { FakePusher, apps, state, publish, down, up };
}

/**
 * A /client-config answering `cfg.app`, with `cfg.failover`; counts reads (and when, by
 * Date.now()). While `cfg.gate` is set, answers wait for it (what they say is taken at the read);
 * while `cfg.refuse` is, their endpoint is on another origin (checkAnswer refuses them).
 */
function fakeConfig() {
  const cfg = { app: 'old', failover: null, version: 1, reads: [], gate: null, refuse: false };
  cfg.fetch = async () => {
    cfg.reads.push(Date.now());
    const { app, failover, version } = cfg;
    if (cfg.gate) await cfg.gate;
    return new Response(JSON.stringify({
      app, key: `${app}-key`, cluster: 'mt1', client_options: {},
      channelAuthorization: { endpoint: cfg.refuse ? `https://elsewhere.example/auth/${app}` : `/auth/${app}` }, userAuthentication: { endpoint: `/auth/${app}/user` },
      percent: 0, control_channel: 'ctl', version, failover,
    }), { status: 200 });
  };
  /** The fleet's decision: every client to `to`. */
  cfg.failTo = (to, reason = 'unhealthy') => {
    cfg.failover = { from: to === 'new' ? 'old' : 'new', to, since_ms: 1, reason };
    cfg.app = to;
    cfg.version++;
  };
  return cfg;
}

const SHORT = { afterMs: 40, silentMs: 60, pongMs: 40 };

/** connect() on app old, recording onSwitch and onFailover. */
async function connected(world, cfg, extra = {}) {
  const told = [];
  const pusher = await connect(world.FakePusher, {
    configUrl: 'http://svc/client-config', fetch: cfg.fetch, random: () => 0, retry: false, failover: SHORT,
    onSwitch: (from, to) => told.push(`switch ${from}->${to}`),
    onFailover: (from, to, reason) => told.push(`failover ${from}->${to} ${reason}`),
    ...extra,
  });
  await until(() => pusher.channel('ctl').subscribed);
  return { pusher, told };
}

/** A subscribed channel, counting what the app is told. */
async function subscribed(pusher, name) {
  const ch = pusher.subscribe(name);
  const seen = { succeeded: 0, errors: 0, events: [], added: [], removed: [] };
  ch.bind('pusher:subscription_succeeded', () => seen.succeeded++);
  ch.bind('pusher:subscription_error', () => seen.errors++);
  ch.bind('pusher:member_added', (m) => seen.added.push(m.id));
  ch.bind('pusher:member_removed', (m) => seen.removed.push(m.id));
  ch.bind('tick', (d) => seen.events.push(d));
  await until(() => ch.subscribed);
  return { ch, seen };
}

test('a connection not connected for afterMs is suspected: /client-config is read again', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  await connected(world, cfg);
  const before = cfg.reads.length;
  const dropped = Date.now();
  world.down('old-key');
  await sleep(25);
  assert.equal(cfg.reads.length, before, 'not before afterMs');
  await until(() => cfg.reads.length > before);
  assert.ok(cfg.reads[before] - dropped >= SHORT.afterMs, `read ${cfg.reads[before] - dropped} ms after the drop`);
});

test('connected but silent: pinged after silentMs; no pong within pongMs → suspected', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  await connected(world, cfg);
  const before = cfg.reads.length;
  world.apps['old-key'].silent = true; // black-holed: still 'connected', nothing comes
  const from = Date.now();
  await until(() => world.state.pings > 0);
  assert.equal(cfg.reads.length, before, 'a ping first, no read');
  await until(() => cfg.reads.length > before);
  assert.ok(cfg.reads[before] - from >= SHORT.silentMs + SHORT.pongMs - 5, `suspected ${cfg.reads[before] - from} ms after silence began`);
});

test('a pong clears it: an idle healthy client pings at most once per silentMs and never re-reads', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  await connected(world, cfg);
  const before = cfg.reads.length;
  const pingsBefore = world.state.pings;
  await sleep(400);
  const pings = world.state.pings - pingsBefore;
  assert.ok(pings >= 2, `pinged while idle (${pings})`);
  assert.ok(pings <= 400 / SHORT.silentMs, `at most once per silentMs (${pings})`);
  assert.equal(cfg.reads.length, before, 'no re-read');
});

test('a late pong (after pongMs) ends the suspicion: the re-reads stop', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  await connected(world, cfg, { failover: { afterMs: 40, silentMs: 60, pongMs: 20 } });
  world.apps['old-key'].pongDelayMs = 150; // slower than pongMs, but it comes
  const before = cfg.reads.length;
  await until(() => cfg.reads.length > before);
  const suspected = Date.now();
  world.apps['old-key'].pongDelayMs = 1;
  // With random 0 the loop's next read would be 1 s after the first (2 s × 0.5): the pong comes before.
  await sleep(1300 - (Date.now() - suspected));
  assert.equal(cfg.reads.length, before + 1, 'one read, then healthy: no more');
});

test('the re-read schedule: first within 1 s, then 2 s × 1.5 per read up to 30 s, each ±50 % (fake timers)', async (t) => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  // random's values in turn: the first read's moment, then each read's jitter.
  const draws = [0.25, 0.9, 0.1, 0.5, 0.75, 0.3, 0.6, 0.95, 0.0, 0.5, 0.2];
  let i = 0;
  let drawing = false;
  const random = () => (drawing ? draws[i++ % draws.length] : 0);
  await connected(world, cfg, { random, failover: { afterMs: 3000, silentMs: 1e9, pongMs: 5000 } });
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  t.after(() => mock.timers.reset());
  const flush = async () => { for (let k = 0; k < 5; k++) await new Promise((r) => setImmediate(r)); };
  drawing = true;
  const before = cfg.reads.length;
  world.down('old-key'); // 'connecting' now; 'unavailable' 5 ms later; the config keeps naming old
  // (A mocked tick runs its timers at its end: each step ends where the next timer is due.)
  mock.timers.tick(2999);
  await flush();
  mock.timers.tick(1); // suspected now, afterMs after the drop
  await flush();
  assert.equal(cfg.reads.length, before, 'suspected; the first read comes at a random moment within 1 s');
  const expected = [Math.floor(draws[0] * 1000)];
  for (let n = 1; n < draws.length; n++) {
    expected.push(Math.floor(Math.min(30000, 2000 * 1.5 ** (n - 1)) * (0.5 + draws[n])));
  }
  for (const [n, delay] of expected.entries()) {
    mock.timers.tick(delay - 1);
    await flush();
    assert.equal(cfg.reads.length - before, n, `read ${n} not before ${delay} ms`);
    mock.timers.tick(1);
    await flush();
    assert.equal(cfg.reads.length - before, n + 1, `read ${n} at ${delay} ms`);
  }
  assert.equal(expected.at(-1), Math.floor(30000 * (0.5 + draws.at(-1))), 'capped at 30 s before the jitter');
});

test('a read still under way when the connection is healthy again starts nothing when it answers', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher } = await connected(world, cfg);
  let open;
  cfg.gate = new Promise((r) => { open = r; }); // reads hang until open()
  const before = cfg.reads.length;
  world.down('old-key');
  await until(() => cfg.reads.length > before); // the suspicion's read, hanging
  world.up('old-key');
  await until(() => pusher.connection.state === 'connected'); // healthy (its reconnect re-reads too)
  open();
  const released = cfg.reads.length;
  await sleep(1300); // a loop would read again 1 s later (random 0: 2 s × 0.5)
  assert.equal(cfg.reads.length, released);
});

test('never two loops: a read from a suspicion that ended is dropped when it answers', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher } = await connected(world, cfg);
  let open;
  cfg.gate = new Promise((r) => { open = r; }); // reads hang until open()
  const before = cfg.reads.length;
  world.down('old-key');
  await until(() => cfg.reads.length > before); // the first suspicion's read, hanging
  world.up('old-key');
  await until(() => pusher.connection.state === 'connected'); // healthy: that loop ends
  const again = cfg.reads.length;
  world.down('old-key');
  await until(() => cfg.reads.length > again); // the second suspicion's read, hanging
  open(); // both answer (old, as before)
  const released = cfg.reads.length;
  // With random 0 the loop reads again 1 s later (2 s × 0.5): once, not once per loop.
  await sleep(1300);
  assert.equal(cfg.reads.length - released, 1);
});

test('a plain move off a dead app: one onFailover, no second subscription_succeeded, members that differ told', async () => {
  const world = fakeWorld();
  world.apps['old-key'].members['presence-room'] = { a: { n: 'A' }, b: { n: 'B' } };
  world.apps['new-key'].members['presence-room'] = { a: { n: 'A' }, c: { n: 'C' } };
  const cfg = fakeConfig();
  const { pusher, told } = await connected(world, cfg);
  const x = await subscribed(pusher, 'private-x');
  const room = await subscribed(pusher, 'presence-room');
  assert.deepEqual(Object.keys(room.ch.members.members).sort(), ['a', 'b']);
  const created = world.state.created;
  world.down('old-key');
  cfg.failTo('new');
  await until(() => told.length === 1);
  assert.deepEqual(told, ['failover old->new unhealthy']);
  assert.equal(pusher.key, 'new-key');
  assert.equal(world.state.created, created, 'no second connection: the app was dead');
  assert.ok(x.ch.subscribed && room.ch.subscribed, 'every channel re-subscribed on new');
  assert.equal(x.seen.succeeded, 1, 'no second subscription_succeeded');
  assert.equal(room.seen.succeeded, 1, 'no second subscription_succeeded (presence)');
  assert.deepEqual(room.seen.removed, ['b']);
  assert.deepEqual(room.seen.added, ['c']);
  world.publish('new-key', 'private-x', 'tick', 1);
  assert.deepEqual(x.seen.events, [1], 'live on new');
  // A reconnect on new re-reads: the answer still names new, so nothing moves.
  pusher.connection.emit('connected');
  await sleep(50);
  assert.deepEqual(told, ['failover old->new unhealthy']);
  assert.equal(pusher.key, 'new-key');
});

test('a plain move lets a refused re-subscription through', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher, told } = await connected(world, cfg);
  const x = await subscribed(pusher, 'private-x');
  world.down('old-key');
  const join = world.FakePusher.prototype.join;
  world.FakePusher.prototype.join = function (ch) {
    if (this.key !== 'new-key' || ch.name !== 'private-x') return join.call(this, ch);
    setTimeout(() => ch.emit('pusher:subscription_error', { status: 403 }), 3);
  };
  cfg.failTo('new');
  await until(() => told.length === 1);
  assert.equal(x.seen.errors, 1, 'the app is told of the refusal');
  assert.deepEqual(told, ['failover old->new unhealthy']);
});

test('a failover while the connection works: make-before-break, told to onFailover (not onSwitch), once', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher, told } = await connected(world, cfg);
  const x = await subscribed(pusher, 'private-x');
  const created = world.state.created;
  cfg.failTo('new', 'operator');
  world.publish('old-key', 'ctl', 'rollout-changed', { version: cfg.version, spread_secs: 0, failover: cfg.failover });
  await until(() => told.length === 1, 10000);
  assert.deepEqual(told, ['failover old->new operator']);
  assert.equal(world.state.created, created + 1, 'a second connection subscribed first');
  assert.equal(x.seen.succeeded, 1);
  assert.equal(pusher.key, 'new-key');
});

test('the end of a failover is a move too: onFailover(from, to, "return")', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher, told } = await connected(world, cfg);
  await subscribed(pusher, 'private-x');
  world.down('old-key');
  cfg.failTo('new');
  await until(() => told.length === 1);
  world.up('old-key');
  Object.assign(cfg, { app: 'old', failover: null, version: cfg.version + 1 });
  world.publish('new-key', 'ctl', 'rollout-changed', { version: cfg.version, spread_secs: 0, failover: null });
  await until(() => told.length === 2, 10000);
  assert.deepEqual(told, ['failover old->new unhealthy', 'failover new->old return']);
  assert.equal(pusher.key, 'old-key');
});

test('a client moved by its watchdog takes the return, whose version is the rollout\'s again (the one it connected with)', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher, told } = await connected(world, cfg);
  await subscribed(pusher, 'private-x');
  const atConnect = cfg.version;
  world.down('old-key');
  cfg.failTo('new'); // the failover's announcement goes out on old, which this client cannot hear
  await until(() => told.length === 1);
  world.up('old-key');
  // As the service does: the end of a failover is the rollout's own version again.
  Object.assign(cfg, { app: 'old', failover: null, version: atConnect });
  world.publish('new-key', 'ctl', 'rollout-changed', { version: atConnect, spread_secs: 0, failover: null });
  await until(() => told.length === 2, 10000);
  assert.deepEqual(told, ['failover old->new unhealthy', 'failover new->old return']);
  assert.equal(pusher.key, 'old-key');
});

test('flapping: while the answer keeps naming the same app nothing moves, and the reads stop once healthy', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher, told } = await connected(world, cfg);
  const x = await subscribed(pusher, 'private-x');
  const before = cfg.reads.length;
  world.down('old-key');
  await until(() => cfg.reads.length > before);
  world.up('old-key');
  await until(() => pusher.connection.state === 'connected' && x.ch.subscribed);
  await sleep(50);
  const settled = cfg.reads.length;
  world.down('old-key'); // and down again, and back
  await until(() => cfg.reads.length > settled);
  world.up('old-key');
  await until(() => pusher.connection.state === 'connected');
  await sleep(50);
  const after = cfg.reads.length;
  await sleep(300);
  assert.equal(cfg.reads.length, after, 'no re-reads while healthy');
  assert.deepEqual(told, []);
  assert.equal(pusher.key, 'old-key');
});

test('a service without [failover] (answers carry no failover): a dropped client never re-reads', async (t) => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const fetchWith = cfg.fetch;
  cfg.fetch = async (...a) => {
    const answer = await (await fetchWith(...a)).json();
    delete answer.failover;
    return new Response(JSON.stringify(answer), { status: 200 });
  };
  const { pusher } = await connected(world, cfg);
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  t.after(() => mock.timers.reset());
  const before = cfg.reads.length;
  world.down('old-key');
  for (let s = 0; s < 60; s++) {
    mock.timers.tick(1000);
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(cfg.reads.length, before, 'a re-read could not move it: the fleet of dropped clients would only load the service');
  assert.equal(pusher.key, 'old-key');
});

test('failover: false: no watchdog (no ping, no re-read), however long the app is down', async (t) => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher } = await connected(world, cfg, { failover: false });
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  t.after(() => mock.timers.reset());
  const before = cfg.reads.length;
  world.down('old-key');
  world.apps['old-key'].silent = true;
  for (let s = 0; s < 60; s++) {
    mock.timers.tick(1000);
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(cfg.reads.length, before);
  assert.equal(world.state.pings, 0);
  assert.equal(pusher.key, 'old-key');
});

test('the app\'s own disconnect() stops the watchdog; its connect() starts it again', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher } = await connected(world, cfg);
  const before = cfg.reads.length;
  pusher.disconnect();
  await sleep(200);
  assert.equal(cfg.reads.length, before, 'disconnected on purpose: not suspected');
  world.apps['old-key'].up = false;
  pusher.connect();
  await until(() => cfg.reads.length > before);
});

test('an answer whose failover is not null or { from, to, reason } is refused', async () => {
  const world = fakeWorld();
  for (const failover of ['yes', { from: 'old', to: 'new' }, { from: 'old', to: 'new', reason: 7 }, ['old', 'new']]) {
    const cfg = fakeConfig();
    cfg.failover = failover;
    await assert.rejects(connect(world.FakePusher, { configUrl: 'http://svc/client-config', fetch: cfg.fetch }), /failover .* is not null or \{ from, to, reason \}/);
  }
  const cfg = fakeConfig();
  cfg.failTo('old', 'operator'); // well-formed: taken
  const pusher = await connect(world.FakePusher, { configUrl: 'http://svc/client-config', fetch: cfg.fetch, retry: false });
  assert.equal(pusher.key, 'old-key');
  pusher.disconnect();
});

test('while suspected, an answer checkAnswer refuses counts as not read: the client backs off and stays', async (t) => {
  const world = fakeWorld();
  const cfg = fakeConfig();
  const { pusher, told } = await connected(world, cfg);
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  t.after(() => mock.timers.reset());
  const run = async (ms) => {
    for (let left = ms; left > 0; left -= 10) {
      mock.timers.tick(10);
      for (let k = 0; k < 3; k++) await new Promise((r) => setImmediate(r));
    }
  };
  const before = cfg.reads.length;
  cfg.failTo('new');
  cfg.refuse = true; // its answer names new with an endpoint on another origin: refused, nothing is sent there
  world.down('old-key');
  await run(3000); // reads at 40 ms (afterMs; random 0), then 1 s and 1.5 s later
  assert.equal(cfg.reads.length - before, 3, 'read again, backing off');
  assert.deepEqual(told, []);
  assert.equal(pusher.key, 'old-key');
  cfg.refuse = false;
  await run(2300); // the next read (2.25 s later) is taken: the move
  assert.deepEqual(told, ['failover old->new unhealthy']);
  assert.equal(pusher.key, 'new-key');
});
