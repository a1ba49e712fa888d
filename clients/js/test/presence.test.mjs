// The presence merge (bridgePresence), through connect() on a fake pusher-js:
// the other apps' members, as the authorization answer lists them
// (presence_bridge) and as the service then publishes their changes
// (dual-auth:presence), merged into channel.members and the standard
// member_added / member_removed: once per real change, a user present through
// two apps one member until it leaves the last, late and foreign changes ignored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../pusher-dual-auth.mjs';
import { Emitter, sleep, until } from './support.mjs';


const CONFIG_URL = 'http://svc/client-config';
/** How long the helper holds a member who left through this app on a bridged channel (its LEAVE_GRACE_MS). */
const LEAVE_GRACE_MS = 3000;


/** pusher-js's Members, as much as the helper and an app use of it. */
class Members {
  constructor() { this.members = {}; this.count = 0; }
  each(fn) { for (const id of Object.keys(this.members)) fn({ id, info: this.members[id] }); }
  reset(list) { this.members = {}; this.count = 0; for (const [id, info] of list) this.add(id, info); }
  add(id, info) {
    if (!Object.prototype.hasOwnProperty.call(this.members, id)) this.count++;
    this.members[id] = info;
    return { id, info };
  }
  remove(id) {
    if (!Object.prototype.hasOwnProperty.call(this.members, id)) return null;
    const info = this.members[id];
    delete this.members[id];
    this.count--;
    return { id, info };
  }
}

/**
 * A Pusher server with one app's presence members per channel, and a pusher-js
 * stand-in that authorizes through channelAuthorization's customHandler (as
 * pusher-js does) and, like pusher-js's presence channels, updates
 * channel.members before it emits subscription_succeeded, member_added or member_removed.
 */
function fakeWorld() {
  const native = new Map(); // channel name → Map(user id → info): members through this app
  const instances = new Set();
  const roster = (name) => native.get(name) || native.set(name, new Map()).get(name);
  class FakePusher {
    constructor(key, options) {
      Object.assign(this, { key, options, channels: new Map(), user: { signin_requested: false } });
      this.connection = new Emitter();
      this.connection.state = 'connecting';
      instances.add(this);
      setTimeout(() => {
        Object.assign(this.connection, { state: 'connected', socket_id: '1.1' });
        this.connection.emit('connected');
        for (const ch of this.channels.values()) this.join(ch);
      }, 1);
    }
    join(ch) {
      const ok = () => {
        ch.subscribed = true;
        if (ch.members) ch.members.reset(roster(ch.name));
        ch.emit('pusher:subscription_succeeded', ch.members || {});
      };
      const auth = this.options.channelAuthorization || {};
      if (!/^(private|presence)-/.test(ch.name) || typeof auth.customHandler !== 'function') return setTimeout(ok, 1);
      auth.customHandler({ socketId: this.connection.socket_id, channelName: ch.name }, (error) => {
        if (error) ch.emit('pusher:subscription_error', { status: 0, error: String(error) });
        else ok();
      });
    }
    subscribe(name) {
      if (!this.channels.has(name)) {
        const ch = new Emitter();
        Object.assign(ch, { name, subscribed: false, subscriptionPending: false });
        if (name.startsWith('presence-')) ch.members = new Members();
        this.channels.set(name, ch);
        if (this.connection.state === 'connected') this.join(ch);
      }
      return this.channels.get(name);
    }
    channel(name) { return this.channels.get(name); }
    allChannels() { return [...this.channels.values()]; }
    switchCluster({ appKey }) { this.key = appKey; }
    disconnect() { this.connection.state = 'disconnected'; instances.delete(this); }
  }
  const each = (name, fn) => {
    for (const p of instances) if (p.channels.get(name)?.subscribed) fn(p.channels.get(name));
  };
  return {
    FakePusher,
    /** A member present through this app before anyone subscribes. */
    present: (name, id, info) => roster(name).set(id, info),
    /** A member joins through this app: pusher-js adds it, then emits member_added. */
    join: (name, id, info) => {
      roster(name).set(id, info);
      each(name, (ch) => ch.emit('pusher:member_added', ch.members.add(id, info)));
    },
    /** A member leaves through this app: pusher-js removes it, then emits member_removed. */
    leave: (name, id) => {
      roster(name).delete(id);
      each(name, (ch) => {
        const gone = ch.members.remove(id);
        if (gone) ch.emit('pusher:member_removed', gone);
      });
    },
    publish: (name, event, data) => each(name, (ch) => ch.emit(event, data)),
  };
}

/** /client-config (the client on `old`) and the auth endpoint, answering `bridge` as presence_bridge when given. */
function fakeFetch(bridge) {
  return async (url) => {
    if (String(url).startsWith(CONFIG_URL)) {
      return new Response(JSON.stringify({
        app: 'old', key: 'old-key', cluster: 'mt1', client_options: {},
        channelAuthorization: { endpoint: '/auth/old' }, userAuthentication: { endpoint: '/auth/old/user' },
        percent: 0, control_channel: 'ctl', version: 1,
      }), { status: 200 });
    }
    const answer = { auth: 'old-key:sig', channel_data: '{"user_id":"alice"}' };
    if (bridge !== undefined) answer.presence_bridge = bridge;
    return new Response(JSON.stringify(answer), { status: 200 });
  };
}

/** connect(), then a presence channel whose member events and subscription are recorded. */
async function subscribed(world, bridge) {
  const pusher = await connect(world.FakePusher, { configUrl: CONFIG_URL, fetch: fakeFetch(bridge), random: () => 0 });
  const channel = pusher.subscribe('presence-room');
  const seen = { events: [], succeeded: [] };
  channel.bind('pusher:subscription_succeeded', (members) => seen.succeeded.push(list(members)));
  channel.bind('pusher:member_added', (m) => seen.events.push(`+${m.id} ${JSON.stringify(m.info)}`));
  channel.bind('pusher:member_removed', (m) => seen.events.push(`-${m.id} ${JSON.stringify(m.info)}`));
  await until(() => channel.subscribed);
  return { pusher, channel, seen };
}

/** A Members as sorted "id name" strings, checked against its count. */
function list(members) {
  const out = [];
  members.each((m) => out.push(`${m.id} ${m.info && m.info.name}`));
  assert.equal(members.count, out.length, 'members.count matches the members listed');
  return out.sort();
}

/** A change the service publishes for a member of another app. */
const change = (over) => ({ app: 'new', time_ms: 1000, seq: 0, ...over });

test('the other apps\' members are merged at subscription, each user once, the app\'s own snapshot entry ignored', async () => {
  const world = fakeWorld();
  world.present('presence-room', 'alice', { name: 'Alice' });
  world.present('presence-room', 'carol', { name: 'Carol' });
  const bridge = {
    new: { bob: { name: 'Bob' }, alice: { name: 'Alice (new)' } }, // alice is present through both apps
    old: { mallory: { name: 'Mallory' } }, // the client's own app: pusher-js's members are the truth there
  };
  const { pusher, channel, seen } = await subscribed(world, bridge);
  assert.deepEqual(list(channel.members), ['alice Alice', 'bob Bob', 'carol Carol']);
  assert.deepEqual(seen.succeeded, [['alice Alice', 'bob Bob', 'carol Carol']], 'subscription_succeeded carries the merged members');
  assert.deepEqual(seen.events, [], 'no member event for the snapshot');
  pusher.disconnect();
});

test('bridged changes: a join and a leave told once each; repeats, late (older) changes and the app\'s own are ignored', async () => {
  const world = fakeWorld();
  world.present('presence-room', 'alice', { name: 'Alice' });
  const { pusher, channel, seen } = await subscribed(world, { new: {} });
  world.publish('presence-room', 'dual-auth:presence', change({ user_id: 'dave', user_info: { name: 'Dave' }, present: true, time_ms: 10, seq: 1 }));
  world.publish('presence-room', 'dual-auth:presence', change({ user_id: 'dave', user_info: { name: 'Dave' }, present: true, time_ms: 10, seq: 1 }));
  world.publish('presence-room', 'dual-auth:presence', change({ user_id: 'dave', present: false, time_ms: 9 })); // older: arrived late
  world.publish('presence-room', 'dual-auth:presence', change({ user_id: 'dave', present: false, time_ms: 10, seq: 0 })); // older seq
  world.publish('presence-room', 'dual-auth:presence', change({ app: 'old', user_id: 'eve', user_info: { name: 'Eve' }, present: true }));
  world.publish('presence-room', 'dual-auth:presence', 'not json {');
  world.publish('presence-room', 'dual-auth:presence', JSON.stringify(change({ user_id: 'erin', user_info: { name: 'Erin' }, present: true })));
  assert.deepEqual(seen.events, ['+dave {"name":"Dave"}', '+erin {"name":"Erin"}']);
  assert.deepEqual(list(channel.members), ['alice Alice', 'dave Dave', 'erin Erin']);
  world.publish('presence-room', 'dual-auth:presence', change({ user_id: 'dave', present: false, time_ms: 11 }));
  assert.deepEqual(seen.events.slice(2), ['-dave {"name":"Dave"}'], 'the leave carries the info the member had');
  assert.deepEqual(list(channel.members), ['alice Alice', 'erin Erin']);
  pusher.disconnect();
});

test('a user present through two apps is one member until it leaves the last', async () => {
  const world = fakeWorld();
  world.present('presence-room', 'alice', { name: 'Alice' });
  const { pusher, channel, seen } = await subscribed(world, { new: { bob: { name: 'Bob' } } });
  world.join('presence-room', 'bob', { name: 'Bob' }); // bob opens a tab on this app too
  assert.deepEqual(seen.events, [], 'already listed (through the other app): no member_added');
  assert.deepEqual(list(channel.members), ['alice Alice', 'bob Bob']);
  world.publish('presence-room', 'dual-auth:presence', change({ user_id: 'bob', present: false }));
  assert.deepEqual(seen.events, [], 'still present through this app: no member_removed');
  assert.deepEqual(list(channel.members), ['alice Alice', 'bob Bob']);
  world.publish('presence-room', 'dual-auth:presence', change({ user_id: 'carol', user_info: { name: 'Carol (new)' }, present: true }));
  world.join('presence-room', 'carol', { name: 'Carol' });
  assert.deepEqual(list(channel.members), ['alice Alice', 'bob Bob', 'carol Carol'], 'this app\'s info while she is here');
  world.leave('presence-room', 'carol'); // pusher-js drops her from members: the helper lists her again, as the other app has her
  assert.deepEqual(seen.events, ['+carol {"name":"Carol (new)"}'], 'carol: joined once, never left');
  assert.deepEqual(list(channel.members), ['alice Alice', 'bob Bob', 'carol Carol (new)']);
  pusher.disconnect();
});

test('a member leaving through this app is held a moment: moving to another app is no leave and join; gone is told once', async () => {
  const world = fakeWorld();
  world.present('presence-room', 'alice', { name: 'Alice' });
  world.present('presence-room', 'frank', { name: 'Frank' });
  world.present('presence-room', 'grace', { name: 'Grace' });
  const { pusher, channel, seen } = await subscribed(world, { new: {} });
  world.leave('presence-room', 'frank'); // frank moves: his new app announces him a moment later
  world.leave('presence-room', 'grace'); // grace closes her tab
  assert.deepEqual(list(channel.members), ['alice Alice', 'frank Frank', 'grace Grace'], 'both held');
  await sleep(100);
  world.publish('presence-room', 'dual-auth:presence', change({ user_id: 'frank', user_info: { name: 'Frank' }, present: true }));
  await sleep(LEAVE_GRACE_MS + 200);
  assert.deepEqual(seen.events, ['-grace {"name":"Grace"}'], 'frank moved (nothing told); grace left (told once)');
  assert.deepEqual(list(channel.members), ['alice Alice', 'frank Frank']);
  pusher.disconnect();
});

test('a channel the service does not bridge: pusher-js\'s member events pass as they are, at once', async () => {
  const world = fakeWorld();
  world.present('presence-room', 'alice', { name: 'Alice' });
  const { pusher, channel, seen } = await subscribed(world, undefined); // no presence_bridge in the answer
  world.join('presence-room', 'henry', { name: 'Henry' });
  world.leave('presence-room', 'henry');
  assert.deepEqual(seen.events, ['+henry {"name":"Henry"}', '-henry {"name":"Henry"}']);
  assert.deepEqual(list(channel.members), ['alice Alice']);
  pusher.disconnect();
});
