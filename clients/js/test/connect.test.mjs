// connect() against a fake pusher-js and a fake /client-config: assignment
// changes, announcements (garbage, repeats from several replicas), a failing
// target, pusher-js without switchCluster, a failing or garbage client-config,
// re-check on reconnect, and the handover itself (events on both apps once).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../pusher-dual-auth.mjs';
import { Emitter, sleep, until } from './support.mjs';


class FakeChannel extends Emitter {
  constructor(name) { super(); this.name = name; this.subscribed = false; this.subscriptionPending = false; }
}

/** A Pusher "server" with two apps: who is subscribed where, and what it refuses. */
function fakeWorld({ refuse = () => false, connects = () => true } = {}) {
  const instances = new Set();
  let sockets = 0;
  class FakePusher {
    constructor(key, options) {
      this.key = key;
      this.options = options;
      this.channels = new Map();
      this.connection = new Emitter();
      this.connection.state = 'initialized';
      this.user = { signin_requested: false };
      instances.add(this);
      this.open();
    }
    open() {
      this.connection.state = 'connecting';
      if (!connects(this.key)) return;
      setTimeout(() => {
        this.connection.socket_id = `${++sockets}.${sockets}`;
        this.connection.state = 'connected';
        this.connection.emit('connected');
        for (const ch of this.channels.values()) this.join(ch);
      }, 5);
    }
    join(ch) {
      ch.subscriptionPending = true;
      setTimeout(() => {
        if (this.connection.state !== 'connected') return;
        ch.subscriptionPending = false;
        if (refuse(this.key, ch.name)) return ch.emit('pusher:subscription_error', { status: 403 });
        ch.subscribed = true;
        ch.emit('pusher:subscription_succeeded', {});
      }, 5);
    }
    subscribe(name) {
      if (!this.channels.has(name)) {
        const ch = new FakeChannel(name);
        this.channels.set(name, ch);
        if (this.connection.state === 'connected') this.join(ch);
      }
      return this.channels.get(name);
    }
    channel(name) { return this.channels.get(name); }
    allChannels() { return [...this.channels.values()]; }
    switchCluster({ appKey }) {
      this.key = appKey;
      this.connection.state = 'connecting';
      for (const ch of this.channels.values()) ch.subscribed = false;
      this.open();
    }
    disconnect() { this.connection.state = 'disconnected'; instances.delete(this); }
  }
  const publish = (key, channel, event, data) => {
    for (const p of instances) {
      const ch = p.key === key && p.connection.state === 'connected' && p.channels.get(channel);
      if (ch && ch.subscribed) ch.emit(event, data);
    }
  };
  // Delivered `ms` later to the connections subscribed now (a message on its way), if still open.
  const publishInFlight = (key, channel, event, data, ms) => {
    const to = [...instances].filter((p) => p.key === key && p.connection.state === 'connected' && p.channels.get(channel)?.subscribed)
      .map((p) => [p, p.connection.socket_id]);
    setTimeout(() => {
      for (const [p, socket] of to) if (p.connection.socket_id === socket && p.key === key) p.channels.get(channel).emit(event, data);
    }, ms);
  };
  return { FakePusher, publish, publishInFlight, instances };
}

/** The version /client-config answers: the one last announced (replicas that reloaded). */
let served = 1;
/** An announcement of `version` on the control channel, as the replicas send it once they reloaded. */
function announce(world, version = served + 1, raw = false) {
  served = version;
  const data = { version, spread_secs: 0 };
  world.publish('old-key', 'ctl', 'rollout-changed', raw ? JSON.stringify(data) : data);
}

/** A /client-config that answers `assignment()` (an app name) or `answer()`. */
function fakeConfig(assignment, answer) {
  let reads = 0;
  const fetch = async () => {
    reads++;
    if (answer) return answer();
    const app = assignment();
    return new Response(JSON.stringify({
      app, key: `${app}-key`, cluster: 'mt1', client_options: {},
      channelAuthorization: { endpoint: `/auth/${app}` }, userAuthentication: { endpoint: `/auth/${app}/user` },
      percent: 0, control_channel: 'ctl', version: served,
    }), { status: 200 });
  };
  return { fetch, reads: () => reads };
}

const settings = (fetch, extra = {}) => ({ configUrl: 'http://svc/client-config', fetch, random: () => 0, retry: false, ...extra });

test('connect rejects with a clear error, never hangs', async () => {
  const { FakePusher } = fakeWorld({ connects: () => false });
  await assert.rejects(connect(FakePusher, settings(fakeConfig(() => 'old').fetch, { connectTimeoutMs: 50 })), /connecting to old: no success within 50 ms/);
  const down = fakeConfig(null, () => new Response('oops', { status: 503 }));
  await assert.rejects(connect(fakeWorld().FakePusher, settings(down.fetch)), /client-config: HTTP 503/);
  const garbage = fakeConfig(null, () => new Response('{"hello":1}', { status: 200 }));
  await assert.rejects(connect(fakeWorld().FakePusher, settings(garbage.fetch)), /not a client-config answer/);
  const html = fakeConfig(null, () => new Response('<html>', { status: 200 }));
  await assert.rejects(connect(fakeWorld().FakePusher, settings(html.fetch)), /not a client-config answer/);
});

test('a move delivers events published to both apps once, keeps the object, and says so once', async () => {
  const world = fakeWorld();
  let app = 'old';
  const cfg = fakeConfig(() => app);
  const switches = [];
  const pusher = await connect(world.FakePusher, settings(cfg.fetch, { onSwitch: (f, t) => switches.push(`${f}->${t}`) }));
  const got = [];
  const ch = pusher.subscribe('private-x');
  ch.bind('tick', (d) => got.push(d.n));
  let succeeded = 0;
  ch.bind('pusher:subscription_succeeded', () => succeeded++);
  await until(() => ch.subscribed && pusher.channel('ctl').subscribed);
  let n = 0;
  const both = () => { n++; world.publish('old-key', 'private-x', 'tick', { n }); world.publish('new-key', 'private-x', 'tick', { n }); };
  const ticking = setInterval(both, 3);
  app = 'new';
  announce(world, undefined, true);
  await until(() => switches.length === 1, 10000);
  await sleep(30);
  clearInterval(ticking);
  await sleep(20);
  assert.equal(pusher.key, 'new-key');
  assert.deepEqual(switches, ['old->new']);
  assert.deepEqual(got, Array.from({ length: got.length }, (_, k) => got[0] + k), 'every number once, in order');
  assert.equal(got[got.length - 1], n, 'up to the last one');
  assert.equal(succeeded, 1, 'no second subscription_succeeded for the app');
});

test('a target that refuses a channel leaves the client where it is, told why', async () => {
  const world = fakeWorld({ refuse: (key, name) => key === 'new-key' && name === 'private-x' });
  let app = 'old';
  const failures = [];
  const pusher = await connect(world.FakePusher, settings(fakeConfig(() => app).fetch, {
    onSwitchFailed: (from, to, e) => failures.push(`${from}->${to}: ${e.message}`),
  }));
  const ch = pusher.subscribe('private-x');
  await until(() => ch.subscribed && pusher.channel('ctl').subscribed);
  app = 'new';
  announce(world);
  await until(() => failures.length === 1);
  assert.match(failures[0], /^old->new: subscription to private-x refused/);
  assert.equal(pusher.key, 'old-key', 'still on the old app');
  const got = [];
  ch.bind('tick', (d) => got.push(d));
  world.publish('old-key', 'private-x', 'tick', 1);
  assert.deepEqual(got, [1], 'and its channel still works');
});

test('announcements: garbage is ignored, a version repeated by several replicas is acted on once', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig(() => 'old');
  const pusher = await connect(world.FakePusher, settings(cfg.fetch));
  await until(() => pusher.channel('ctl').subscribed);
  const before = cfg.reads();
  world.publish('old-key', 'ctl', 'rollout-changed', 'not json {');
  world.publish('old-key', 'ctl', 'rollout-changed', '42');
  const v = served + 1;
  for (let replica = 0; replica < 3; replica++) announce(world, v);
  await sleep(30);
  assert.equal(cfg.reads() - before, 1, 'one re-read for that version');
});

test('pusher-js without switchCluster: no move is claimed', async () => {
  const world = fakeWorld();
  class OldPusher extends world.FakePusher {}
  OldPusher.prototype.switchCluster = undefined;
  let app = 'old';
  const failures = [];
  const switches = [];
  const pusher = await connect(OldPusher, settings(fakeConfig(() => app).fetch, {
    onSwitch: () => switches.push(1), onSwitchFailed: (f, t, e) => failures.push(e.message),
  }));
  await until(() => pusher.channel('ctl').subscribed);
  app = 'new';
  announce(world);
  await until(() => failures.length === 1);
  assert.match(failures[0], /without switchCluster/);
  assert.deepEqual(switches, []);
  assert.equal(pusher.key, 'old-key');
});

test('a client that reconnects re-reads its assignment', async () => {
  const world = fakeWorld();
  const cfg = fakeConfig(() => 'old');
  const pusher = await connect(world.FakePusher, settings(cfg.fetch));
  const before = cfg.reads();
  pusher.connection.emit('connected');
  await sleep(10);
  assert.equal(cfg.reads() - before, 1);
});

test('an assignment that cannot be read after an announcement is read again (a replica restarting)', async () => {
  const world = fakeWorld();
  let app = 'old';
  let failing = 0;
  const good = fakeConfig(() => app);
  const cfg = fakeConfig(null, () => (failing-- > 0 ? new Response('bad gateway', { status: 502 }) : good.fetch()));
  const switches = [];
  const pusher = await connect(world.FakePusher, settings(cfg.fetch, { onSwitch: (f, t) => switches.push(`${f}->${t}`) }));
  await until(() => pusher.channel('ctl').subscribed);
  const before = cfg.reads();
  app = 'new';
  failing = 2; // the next two reads meet a proxy whose replica is restarting
  announce(world);
  await until(() => switches.length === 1, 5000);
  assert.equal(cfg.reads() - before, 3, 'two failed reads, then the one that moved it');
  assert.equal(pusher.key, 'new-key');
});

test('a replica that has not loaded the announced change yet is read again until it has', async () => {
  const world = fakeWorld();
  let app = 'old';
  let lagging = 0;
  const good = fakeConfig(() => app);
  // A replica still on the old config: the old assignment, under the old version.
  const cfg = fakeConfig(null, async () => {
    if (lagging-- <= 0) return good.fetch();
    const res = await fakeConfig(() => 'old').fetch();
    const body = await res.json();
    return new Response(JSON.stringify({ ...body, version: served - 1 }), { status: 200 });
  });
  const switches = [];
  const pusher = await connect(world.FakePusher, settings(cfg.fetch, { onSwitch: (f, t) => switches.push(`${f}->${t}`) }));
  await until(() => pusher.channel('ctl').subscribed);
  const before = cfg.reads();
  app = 'new';
  lagging = 1;
  announce(world);
  await until(() => switches.length === 1, 5000);
  assert.equal(cfg.reads() - before, 2, 'the lagging replica, then one that reloaded');
  assert.equal(pusher.key, 'new-key');
});

test('an event on its way to the old connection when the move starts is not lost', async () => {
  const world = fakeWorld();
  let app = 'old';
  const switches = [];
  const pusher = await connect(world.FakePusher, settings(fakeConfig(() => app).fetch, { onSwitch: (f, t) => switches.push(`${f}->${t}`) }));
  const got = [];
  const ch = pusher.subscribe('private-x');
  ch.bind('tick', (d) => got.push(d.n));
  await until(() => ch.subscribed && pusher.channel('ctl').subscribed);
  app = 'new';
  // Published to both apps before the second connection subscribes: only the old one will have it, 300 ms later.
  world.publishInFlight('old-key', 'private-x', 'tick', { n: 1 }, 300);
  announce(world);
  await until(() => switches.length === 1, 10000);
  assert.deepEqual(got, [1], 'delivered by the old connection before it was let go');
});
