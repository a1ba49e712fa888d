// Recovery after a reconnect, against a fake pusher-js and a fake service (its
// authorization answers with recovery tokens, its buffer, POST /recover/{app}):
// what was published while away arrives once, in order, before newer live events;
// what arrived live is not repeated; a deliberate repeat arrives twice; late live
// copies are dropped; client events and events not in the buffer pass through;
// gaps, refusals and an unreachable service are told once; a service without
// [recovery] gets no request; the publisher's own socket is left out; the
// delivered list is bounded; positions move forward while connected; a service
// taking fewer channels per request; a move between apps repeats nothing; a
// failover off a dead app recovers what it missed; plain pusher-js with recover().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, recover, retryingAuth, RECOVERY_GAP } from '../pusher-dual-auth.mjs';
import { Emitter, FakeConnection, sleep, until } from './support.mjs';


const CONFIG_URL = 'http://svc/client-config';

/**
 * A Pusher server (per app key, which sockets are subscribed where) and the
 * service beside it: the authorization answers (a recovery token when
 * `recovery`), the buffer of what was published through it (at most `cap` per
 * channel), and POST /recover/{app} over it.
 */
function fakeWorld({ recovery = true, cap = 1000, maxChannels = 100 } = {}) {
  const instances = new Set();
  let sockets = 0;
  let app = 'old';
  let version = 1;
  let failover = null;
  const state = {
    /** Every POST /recover: { app, body, answer }. */
    requests: [],
    /** Per channel: the code to refuse it with, in the next recover answer. */
    refuse: new Map(),
    /** The next recover requests answer this status (a number), while > 0 of them are left. */
    failing: { status: 503, left: 0 },
    /** While set, recover requests wait for it before reading the buffer. */
    gate: null,
    /** Called with a channel the server has registered on its socket, before it sends subscription_succeeded there. */
    registered: null,
  };
  const buffer = new Map(); // channel → [{ seq, event, data, socket_id }]
  const lost = new Map(); // channel → the highest seq the cap evicted
  let seq = 0;
  const tokenOf = (appName, socket, channel) => `tok/${appName}/${socket}/${channel}`;

  class FakeChannel extends Emitter {
    constructor(name, pusher) {
      super();
      Object.assign(this, { name, pusher, subscribed: false, subscriptionPending: false, authAnswers: [] });
    }
    /** As pusher-js: public channels need none; private ones go through config.channelAuthorizer. */
    authorize(socketId, callback) {
      if (!/^(private|presence)-/.test(this.name)) return callback(null, {});
      this.pusher.config.channelAuthorizer({ socketId, channelName: this.name }, callback);
    }
    subscribe() {
      const socket = this.pusher.connection.socket_id;
      this.subscriptionPending = true;
      this.authorize(socket, (error, data) => {
        if (error) return this.emit('pusher:subscription_error', { error: String(error) });
        this.authAnswers.push(data); // what pusher-js got
        setTimeout(() => {
          if (this.pusher.connection.socket_id !== socket || this.pusher.connection.state !== 'connected') return;
          if (state.registered) state.registered(this);
          this.subscriptionPending = false;
          this.subscribed = true;
          this.handleEvent({ event: 'pusher_internal:subscription_succeeded', channel: this.name, data: {} });
        }, 2);
      });
    }
    /** As pusher-js's Channel.handleEvent: internal events become pusher: ones, others are emitted as they are. */
    handleEvent({ event, data }) {
      if (event === 'pusher_internal:subscription_succeeded') return this.emit('pusher:subscription_succeeded', data);
      if (!event.startsWith('pusher_internal:')) this.emit(event, data, {});
    }
  }

  /** pusher-js's own transport, as a fake: a form POST to the endpoint. */
  const ajax = (endpoint) => async ({ socketId, channelName }, callback) => {
    const res = await fetch(endpoint, { method: 'POST', body: new URLSearchParams({ socket_id: socketId, channel_name: channelName }).toString() });
    callback(null, await res.json());
  };

  /** As pusher-js's getConfig: the authorizer is the customHandler, else its own transport. */
  const configOf = (options) => {
    const auth = options.channelAuthorization || {};
    return { channelAuthorizer: auth.customHandler || ajax(auth.endpoint) };
  };

  class FakePusher {
    constructor(key, options) {
      Object.assign(this, { key, options, channels: new Map(), user: { signin_requested: false } });
      this.config = configOf(options);
      this.connection = new FakeConnection();
      instances.add(this);
      this.open();
    }
    open() {
      this.connection.setState('connecting');
      setTimeout(() => {
        sockets++;
        this.connection.socket_id = `${sockets}.${sockets}`;
        this.connection.setState('connected');
        for (const ch of this.channels.values()) ch.subscribe();
      }, 2);
    }
    subscribe(name) {
      if (!this.channels.has(name)) {
        this.channels.set(name, new FakeChannel(name, this));
        if (this.connection.state === 'connected') this.channels.get(name).subscribe();
      }
      return this.channels.get(name);
    }
    channel(name) { return this.channels.get(name); }
    allChannels() { return [...this.channels.values()]; }
    switchCluster({ appKey }) {
      this.key = appKey;
      this.config = configOf(this.options); // as pusher-js: a new config, from the options as they are now
      this.drop();
      this.open();
    }
    /** The connection is lost: nothing reaches it until open(). */
    drop() {
      this.connection.setState('connecting');
      for (const ch of this.channels.values()) ch.subscribed = false;
    }
    disconnect() { this.connection.setState('disconnected'); instances.delete(this); }
  }

  /** Delivers to the connections subscribed now (on any app, or `key`), leaving out `socket_id`; `delayMs` later if given. */
  const deliver = (channel, event, text, { socket_id, key, delayMs } = {}) => {
    const to = [...instances].filter((p) => (!key || p.key === key) && p.connection.state === 'connected' &&
      p.connection.socket_id !== socket_id && p.channels.get(channel)?.subscribed).map((p) => [p, p.connection.socket_id]);
    const go = () => {
      for (const [p, socket] of to) {
        if (p.connection.socket_id === socket) p.channels.get(channel).handleEvent({ event, channel, data: JSON.parse(text) });
      }
    };
    if (delayMs) setTimeout(go, delayMs);
    else go();
  };

  /** Published through the service: kept in the buffer (the cap evicts the oldest), then sent to Pusher. */
  const publish = (channel, event, data, opts = {}) => {
    const text = JSON.stringify(data);
    const list = buffer.get(channel) || buffer.set(channel, []).get(channel);
    list.push({ seq: ++seq, event, data: text, socket_id: opts.socket_id });
    while (list.length > cap) lost.set(channel, list.shift().seq);
    if (opts.live !== false) deliver(channel, event, text, opts);
  };
  /** Straight to Pusher (not through the service): never in the buffer. */
  const publishDirect = (channel, event, data) => deliver(channel, event, JSON.stringify(data));

  const read = (channel, since) => {
    const list = buffer.get(channel) || [];
    if (since === undefined) return { events: [], position: `p:${seq}`, gap: null };
    const from = Number(/^p:(\d+)$/.exec(since)?.[1]);
    if (!Number.isInteger(from) || from > seq) return { events: [], position: `p:${seq}`, gap: 'unknown_position' };
    const events = list.filter((e) => e.seq > from)
      .map(({ event, data, socket_id }) => (socket_id ? { event, data, socket_id } : { event, data }));
    return { events, position: `p:${seq}`, gap: from < (lost.get(channel) || 0) ? 'evicted' : null };
  };

  const fetch = async (url, init = {}) => {
    url = String(url);
    if (url.startsWith(CONFIG_URL)) {
      return Response.json({
        app, key: `${app}-key`, cluster: 'mt1', client_options: {},
        channelAuthorization: { endpoint: `/auth/${app}` }, userAuthentication: { endpoint: `/auth/${app}/user` },
        percent: 0, control_channel: 'ctl', version, failover,
      });
    }
    const auth = /\/auth\/(\w+)$/.exec(url);
    if (auth) {
      const form = new URLSearchParams(init.body);
      const answer = { auth: `${auth[1]}-key:sig` };
      if (recovery) answer.recovery = { token: tokenOf(auth[1], form.get('socket_id'), form.get('channel_name')) };
      return Response.json(answer);
    }
    const rec = /\/recover\/(\w+)$/.exec(url);
    if (!rec) return new Response('not found', { status: 404 });
    const body = JSON.parse(init.body);
    const request = { app: rec[1], url, body, answer: null };
    state.requests.push(request);
    if (!recovery) return Response.json({ error: { code: 'not_found', message: '' } }, { status: 404 });
    if (state.gate) await state.gate;
    if (body.channels.length > maxChannels) {
      return Response.json({ error: { code: 'too_many_channels', message: `at most ${maxChannels}` } }, { status: 400 });
    }
    if (state.failing.left > 0) {
      state.failing.left--;
      return Response.json({ error: { code: 'unavailable', message: '' } }, { status: state.failing.status });
    }
    const channels = {};
    for (const { channel, since, token } of body.channels) {
      const refusal = state.refuse.get(channel);
      state.refuse.delete(channel); // once
      const privateOne = /^(private|presence)-/.test(channel);
      if (refusal) channels[channel] = { error: { code: refusal, message: '' } };
      else if (privateOne && !token) channels[channel] = { error: { code: 'missing_token', message: '' } };
      else if (privateOne && token !== tokenOf(rec[1], body.socket_id, channel)) channels[channel] = { error: { code: 'invalid_token', message: '' } };
      else channels[channel] = read(channel, since);
    }
    request.answer = { channels };
    return Response.json(request.answer);
  };

  return {
    FakePusher, fetch, publish, publishDirect, state, instances,
    /** The rollout moves the client to app `a`: /client-config says so, and the control channel announces it. */
    move(a) {
      app = a;
      version++;
      deliver('ctl', 'rollout-changed', JSON.stringify({ version, spread_secs: 0 }));
    },
    /** The fleet fails app `a`'s clients over to the other: /client-config says so (announced on `a`, which the client cannot hear). */
    failTo(a) {
      failover = { from: app, to: a, since_ms: Date.now(), reason: 'unhealthy' };
      app = a;
      version++;
    },
    /** Recover requests wait until the returned function is called. */
    gate() {
      let open;
      state.gate = new Promise((r) => { open = r; });
      return () => { state.gate = null; open(); };
    },
    /** The connection drops, and comes back (a new socket id) when reconnect() is called. */
    drop: (pusher) => pusher.drop(),
    reconnect: (pusher) => pusher.open(),
  };
}

/** connect() on the fake world, the client on app `old`. */
async function connected(world, extra = {}) {
  return connect(world.FakePusher, { configUrl: CONFIG_URL, fetch: world.fetch, random: () => 0, ...extra });
}

/** A subscribed channel, recording what the app gets: numbers of 'n' events, and everything else by name. */
async function subscribed(world, pusher, name = 'private-a') {
  const ch = pusher.subscribe(name);
  const got = [];
  const gaps = [];
  ch.bind('n', (d) => got.push(d.n));
  ch.bind(RECOVERY_GAP, (g) => gaps.push(g));
  const anchors = world.state.requests.length;
  await until(() => ch.subscribed);
  // The anchor: asked for, and answered.
  await until(() => world.state.requests.length > anchors && world.state.requests.at(-1).answer);
  await sleep(5);
  return { ch, got, gaps };
}

/** Drops the client's connection, runs `away()` meanwhile, and brings it back with the service's answer held until `during()` ran. */
async function dropAndReturn(world, pusher, { away = () => {}, during = () => {} } = {}) {
  world.drop(pusher);
  away();
  const before = world.state.requests.length;
  const open = world.gate();
  world.reconnect(pusher);
  await until(() => world.state.requests.length > before);
  await during();
  open();
  await until(() => world.state.requests.at(-1).answer || world.state.failing.left === 0);
  await sleep(20);
  return world.state.requests.at(-1);
}

test('a drop: what was published while away arrives once, in order, before newer live events', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const { ch, got, gaps } = await subscribed(world, pusher);
  const anchor = world.state.requests.at(-1);
  assert.deepEqual(anchor.body.channels, [{ channel: 'private-a', token: `tok/old/${anchor.body.socket_id}/private-a` }], 'an anchor: no since');
  world.publish('private-a', 'n', { n: 1 });
  world.publish('private-a', 'n', { n: 2 });
  let heldBack;
  const request = await dropAndReturn(world, pusher, {
    away: () => [3, 4, 5].forEach((n) => world.publish('private-a', 'n', { n })),
    during: () => {
      world.publish('private-a', 'n', { n: 6 }); // live on the new socket while the answer is on its way (and in it)
      world.publishDirect('private-a', 'n', { n: 7 }); // live only
      heldBack = [...got];
    },
  });
  assert.deepEqual(heldBack, [1, 2], 'live events wait for the recovery');
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(gaps, []);
  const socket = pusher.connection.socket_id;
  assert.deepEqual(request.body, {
    socket_id: socket,
    channels: [{ channel: 'private-a', since: anchor.answer.channels['private-a'].position, token: `tok/old/${socket}/private-a` }],
  });
  assert.ok(ch.authAnswers.every((a) => !('recovery' in a)), 'pusher-js never sees the token');
});

test('an event the server sends on the new socket before its subscription_succeeded (it registered the socket first) waits for what was missed', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const { got, gaps } = await subscribed(world, pusher);
  world.publish('private-a', 'n', { n: 1 });
  let early = 0;
  await dropAndReturn(world, pusher, {
    away: () => {
      [2, 3].forEach((n) => world.publish('private-a', 'n', { n }));
      world.state.registered = (ch) => {
        if (ch.name !== 'private-a') return; // the control channel subscribes there too
        world.state.registered = null;
        early++;
        world.publish('private-a', 'n', { n: 4 }, { live: false }); // in the buffer, and ...
        ch.handleEvent({ event: 'n', channel: ch.name, data: { n: 4 } }); // ... on the socket before subscription_succeeded
      };
    },
    during: () => world.publish('private-a', 'n', { n: 5 }),
  });
  console.log("GOT", got); assert.equal(early, 1, "the setup ran: an event came before subscription_succeeded");
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  assert.deepEqual(gaps, []);
});

test('what arrived live before the drop is not repeated', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const { got } = await subscribed(world, pusher);
  for (const n of [1, 2, 3]) world.publish('private-a', 'n', { n });
  const request = await dropAndReturn(world, pusher);
  assert.equal(request.answer.channels['private-a'].events.length, 3, 'the buffer has all three');
  assert.deepEqual(got, [1, 2, 3]);
  // And the position moved: the next drop asks from after them.
  const next = await dropAndReturn(world, pusher, { away: () => world.publish('private-a', 'n', { n: 4 }) });
  assert.deepEqual(next.answer.channels['private-a'].events.map((e) => e.data), ['{"n":4}']);
  assert.deepEqual(got, [1, 2, 3, 4]);
});

test('an event published twice on purpose arrives twice', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const { got } = await subscribed(world, pusher);
  world.publish('private-a', 'n', { n: 7 });
  await dropAndReturn(world, pusher, { away: () => [7, 7].forEach((n) => world.publish('private-a', 'n', { n })) });
  assert.deepEqual(got, [7, 7, 7], 'one live, two recovered');
});

test('a live copy of a recovered event, late, is dropped', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const { got } = await subscribed(world, pusher);
  await dropAndReturn(world, pusher, {
    away: () => world.publish('private-a', 'n', { n: 1 }),
    // Published once the new socket is subscribed: in the answer, and live 50 ms after it.
    during: () => world.publish('private-a', 'n', { n: 2 }, { delayMs: 50 }),
  });
  assert.deepEqual(got, [1, 2], 'recovered');
  await sleep(80);
  assert.deepEqual(got, [1, 2], 'its live copy dropped');
  world.publish('private-a', 'n', { n: 2 });
  assert.deepEqual(got, [1, 2, 2], 'a new one with the same data is delivered');
});

test('client events and events published straight to Pusher pass through, and are never matched', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const { ch, got } = await subscribed(world, pusher);
  const typing = [];
  ch.bind('client-typing', (d) => typing.push(d.who));
  world.publishDirect('private-a', 'client-typing', { who: 'bob' });
  world.publishDirect('private-a', 'n', { n: 1 }); // straight to Pusher: not in the buffer
  world.publish('private-a', 'n', { n: 2 });
  await dropAndReturn(world, pusher, {
    away: () => world.publish('private-a', 'n', { n: 1 }), // through the service, same data as the direct one
    during: () => {
      world.publishDirect('private-a', 'client-typing', { who: 'eve' });
      world.publishDirect('private-a', 'n', { n: 9 });
    },
  });
  assert.deepEqual(typing, ['bob', 'eve']);
  assert.deepEqual(got, [1, 2, 1, 9], 'the recovered 1 is not taken for the direct one');
});

test('a gap in the buffer is told once, after what it still had', async () => {
  const world = fakeWorld({ cap: 3 });
  const pusher = await connected(world);
  const { got, gaps } = await subscribed(world, pusher);
  world.publish('private-a', 'n', { n: 1 });
  await dropAndReturn(world, pusher, { away: () => [2, 3, 4, 5, 6].forEach((n) => world.publish('private-a', 'n', { n })) });
  assert.deepEqual(got, [1, 4, 5, 6]);
  assert.deepEqual(gaps, [{ channel: 'private-a', reason: 'evicted', recovered: 3 }]);
  world.publish('private-a', 'n', { n: 7 });
  assert.deepEqual(got, [1, 4, 5, 6, 7], 'and goes on');
  assert.equal(gaps.length, 1);
});

test('a service without [recovery]: no request at all', async () => {
  const world = fakeWorld({ recovery: false });
  const pusher = await connected(world);
  const ch = pusher.subscribe('private-a');
  const pub = pusher.subscribe('public-b');
  const got = [];
  ch.bind('n', (d) => got.push(d.n));
  await until(() => ch.subscribed && pub.subscribed);
  world.publish('private-a', 'n', { n: 1 });
  world.drop(pusher);
  world.publish('private-a', 'n', { n: 2 });
  world.reconnect(pusher);
  await until(() => ch.subscribed);
  world.publish('private-a', 'n', { n: 3 });
  await sleep(30);
  assert.equal(world.state.requests.length, 0);
  assert.deepEqual(got, [1, 3], 'live events as pusher-js delivers them, not held');
});

test('a refused token is told as a gap, without a crash, and the next drop is recovered again', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const { got, gaps } = await subscribed(world, pusher);
  world.state.refuse.set('private-a', 'invalid_token');
  await dropAndReturn(world, pusher, {
    away: () => world.publish('private-a', 'n', { n: 1 }),
    during: () => world.publish('private-a', 'n', { n: 2 }), // held
  });
  await until(() => got.length === 1);
  assert.deepEqual(gaps, [{ channel: 'private-a', reason: 'invalid_token', recovered: 0 }]);
  assert.deepEqual(got, [2], 'live events are released');
  await until(() => world.state.requests.at(-1).answer?.channels['private-a']?.position); // anchored again
  await dropAndReturn(world, pusher, { away: () => world.publish('private-a', 'n', { n: 3 }) });
  assert.deepEqual(got, [2, 3]);
  assert.equal(gaps.length, 1);
});

test('a service that cannot answer: live events wait at most maxHoldMs, then the gap is told', async () => {
  const world = fakeWorld();
  const pusher = await connected(world, { recovery: { maxHoldMs: 400 } });
  const { got, gaps } = await subscribed(world, pusher);
  world.state.failing = { status: 503, left: 1000 };
  const before = world.state.requests.length;
  world.drop(pusher);
  world.publish('private-a', 'n', { n: 1 });
  world.reconnect(pusher);
  await until(() => world.state.requests.length > before);
  world.publish('private-a', 'n', { n: 2 });
  assert.deepEqual(got, [], 'held');
  const start = Date.now();
  await until(() => gaps.length === 1, 2000);
  assert.ok(Date.now() - start < 700, `released within maxHoldMs (${Date.now() - start} ms)`);
  assert.ok(world.state.requests.length - before >= 2, 'asked again before giving up');
  assert.deepEqual(gaps, [{ channel: 'private-a', reason: 'unavailable', recovered: 0 }]);
  assert.deepEqual(got, [2]);
  world.state.failing.left = 0;
});

test('an event the publisher sent leaving out this client\'s own socket is not recovered', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const { got } = await subscribed(world, pusher);
  const mine = pusher.connection.socket_id;
  world.publish('private-a', 'n', { n: 1 }, { socket_id: mine }); // live: not to this socket
  assert.deepEqual(got, []);
  await dropAndReturn(world, pusher, {
    away: () => {
      world.publish('private-a', 'n', { n: 2 }, { socket_id: mine });
      world.publish('private-a', 'n', { n: 3 }, { socket_id: '999.999' }); // someone else's
    },
  });
  assert.deepEqual(got, [3]);
});

test('the delivered list is bounded: at 500 a re-sync moves the position, and a drop after it repeats nothing', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const { got, gaps } = await subscribed(world, pusher);
  const anchor = world.state.requests.at(-1).answer.channels['private-a'].position;
  for (let n = 1; n <= 500; n++) world.publish('private-a', 'n', { n });
  await until(() => world.state.requests.length === 2 && world.state.requests[1].answer);
  await sleep(5);
  const resync = world.state.requests[1];
  assert.equal(resync.body.channels[0].since, anchor, 'a re-sync from the anchor');
  assert.equal(resync.answer.channels['private-a'].events.length, 500);
  assert.equal(got.length, 500, 'nothing delivered twice');
  world.publish('private-a', 'n', { n: 501 });
  const request = await dropAndReturn(world, pusher, { away: () => world.publish('private-a', 'n', { n: 502 }) });
  assert.equal(request.body.channels[0].since, resync.answer.channels['private-a'].position, 'from the re-sync\'s position');
  assert.deepEqual(request.answer.channels['private-a'].events.map((e) => e.data), ['{"n":501}', '{"n":502}']);
  assert.deepEqual(got, Array.from({ length: 502 }, (_, i) => i + 1));
  assert.deepEqual(gaps, []);
});

test('a recovered event goes through the channel\'s own handleEvent, as pusher-js decrypts an encrypted channel\'s', async () => {
  const world = fakeWorld();
  const pusher = await connected(world);
  const ch = pusher.subscribe('private-encrypted-a');
  // A stand-in for pusher-js's EncryptedChannel: the wire carries { ciphertext }, the app gets the plaintext.
  const plain = ch.handleEvent.bind(ch);
  ch.handleEvent = function (ev) {
    if (ev.event.startsWith('pusher')) return plain(ev);
    this.emit(ev.event, JSON.parse(Buffer.from(ev.data.ciphertext, 'base64').toString()), {});
  };
  const got = [];
  ch.bind('n', (d) => got.push(d.n));
  await until(() => ch.subscribed && world.state.requests.at(-1)?.answer);
  const sealed = (n) => ({ ciphertext: Buffer.from(JSON.stringify({ n })).toString('base64') });
  world.publish('private-encrypted-a', 'n', sealed(1));
  await dropAndReturn(world, pusher, { away: () => world.publish('private-encrypted-a', 'n', sealed(2)) });
  assert.deepEqual(got, [1, 2], 'decrypted, and the live one matched by its plaintext');
});

test('a move to another app repeats nothing: the re-sync on the new app matches what the handover delivered', async () => {
  const world = fakeWorld();
  const switches = [];
  const pusher = await connected(world, { onSwitch: (f, t) => switches.push(`${f}->${t}`) });
  const { got, gaps } = await subscribed(world, pusher, 'private-x');
  await until(() => pusher.channel('ctl').subscribed);
  let n = 0;
  const ticking = setInterval(() => world.publish('private-x', 'n', { n: ++n }), 3); // through the service: both apps get it
  try {
    world.move('new');
    await until(() => switches.length === 1, 10000);
  } finally {
    clearInterval(ticking);
  }
  const socket = pusher.connection.socket_id;
  // The move ends (the client's own connection keeps the handover's filter a while), then the re-sync.
  await until(() => world.state.requests.some((r) => r.app === 'new' && r.answer), 10000);
  await sleep(20);
  const resync = world.state.requests.find((r) => r.app === 'new');
  assert.deepEqual(resync.body.channels[0].token, `tok/new/${socket}/private-x`, 'with the new app\'s token for the new socket');
  assert.ok(resync.answer.channels['private-x'].events.length > 0, 'the buffer has what was published during the move');
  assert.deepEqual(got, Array.from({ length: n }, (_, k) => k + 1), 'every number once, in order');
  assert.deepEqual(gaps, []);
  assert.deepEqual(switches, ['old->new']);
});

test('plain pusher-js: recover() takes the tokens from pusher-js\'s own authorization and recovers after a drop', async () => {
  const world = fakeWorld();
  const pusher = new world.FakePusher('old-key', { cluster: 'mt1', channelAuthorization: { endpoint: 'http://svc/auth/old' } });
  const handle = recover(pusher, { fetch: world.fetch });
  const ch = pusher.subscribe('private-a');
  const pub = pusher.subscribe('public-b');
  const got = [];
  ch.bind('n', (d) => got.push(`a${d.n}`));
  pub.bind('n', (d) => got.push(`b${d.n}`));
  const anchored = (name) => world.state.requests.some((r) => r.answer?.channels[name]?.position);
  await until(() => ch.subscribed && pub.subscribed && anchored('private-a') && anchored('public-b'));
  assert.equal(world.state.requests.length, 1, 'the two anchors in one request');
  world.publish('private-a', 'n', { n: 1 });
  const request = await dropAndReturn(world, pusher, {
    away: () => {
      world.publish('public-b', 'n', { n: 2 });
      world.publish('private-a', 'n', { n: 3 });
    },
  });
  await until(() => got.length === 3);
  await sleep(20);
  assert.equal(request.app, 'old');
  assert.deepEqual(got.sort(), ['a1', 'a3', 'b2']);
  assert.ok(ch.authAnswers.every((a) => !('recovery' in a)), 'pusher-js never sees the token');
  handle.stop();
  assert.throws(() => recover(new world.FakePusher('k', { channelAuthorization: { endpoint: 'http://svc/pusher/auth' } })), /endpoint/);
});

test('plain pusher-js with retryingAuth and an explicit endpoint; a channel subscribed before recover() is authorized again for its token', async () => {
  const world = fakeWorld();
  const pusher = new world.FakePusher('old-key', {
    cluster: 'mt1', channelAuthorization: { customHandler: retryingAuth({ endpoint: 'http://svc/auth/old', fetch: world.fetch }) },
  });
  const ch = pusher.subscribe('private-a');
  await until(() => ch.subscribed);
  const got = [];
  ch.bind('n', (d) => got.push(d.n));
  recover(pusher, { endpoint: 'http://svc/recover/old', fetch: world.fetch });
  await until(() => world.state.requests.some((r) => r.answer?.channels['private-a']?.position));
  assert.deepEqual(world.state.requests.map((r) => r.answer.channels['private-a'].error?.code), ['missing_token', undefined],
    'no token from the first authorization: one more, then the anchor');
  world.publish('private-a', 'n', { n: 1 });
  await dropAndReturn(world, pusher, { away: () => world.publish('private-a', 'n', { n: 2 }) });
  assert.deepEqual(got, [1, 2]);
});

test('a failover off a dead app: what was missed arrives once, in order, before live events; no second subscription_succeeded', async () => {
  const world = fakeWorld();
  const told = [];
  const pusher = await connected(world, {
    failover: { afterMs: 30, silentMs: 1e6, pongMs: 1000 },
    onSwitch: (from, to) => told.push(`switch ${from}->${to}`),
    onFailover: (from, to, reason) => told.push(`failover ${from}->${to} ${reason}`),
  });
  const { ch, got, gaps } = await subscribed(world, pusher);
  let again = 0;
  ch.bind('pusher:subscription_succeeded', () => again++);
  world.publish('private-a', 'n', { n: 1 });
  world.drop(pusher); // the old app is gone: nothing reaches the client, and it does not come back
  world.publish('private-a', 'n', { n: 2 });
  world.publish('private-a', 'n', { n: 3 });
  const open = world.gate();
  world.failTo('new');
  // The watchdog suspects the connection, reads the failover, and moves: recovery asks on the new app.
  await until(() => world.state.requests.some((r) => r.app === 'new' && r.body.channels.some((c) => c.channel === 'private-a' && c.since)));
  world.publish('private-a', 'n', { n: 4 }); // live, while the recovery is under way: held
  await sleep(10);
  assert.deepEqual(got, [1], 'live events wait for what was missed');
  open();
  await until(() => got.length >= 4);
  await sleep(30);
  assert.deepEqual(got, [1, 2, 3, 4]);
  assert.deepEqual(gaps, []);
  assert.equal(again, 0, 'no second subscription_succeeded');
  assert.deepEqual(told, ['failover old->new unhealthy']);
  assert.equal(pusher.key, 'new-key');
});

test('while connected, each channel\'s position moves forward every resyncMs, quietly', async () => {
  const world = fakeWorld();
  const pusher = await connected(world, { recovery: { resyncMs: 100 } });
  const { got, gaps } = await subscribed(world, pusher);
  const anchor = world.state.requests.at(-1).answer.channels['private-a'].position;
  world.publish('private-a', 'n', { n: 1 });
  world.publish('private-a', 'n', { n: 2 }, { socket_id: pusher.connection.socket_id }); // not to this client
  await until(() => world.state.requests.length >= 3 && world.state.requests[2].answer);
  const [, first, second] = world.state.requests;
  assert.equal(first.body.channels[0].since, anchor);
  assert.equal(second.body.channels[0].since, first.answer.channels['private-a'].position, 'each from the last one');
  assert.deepEqual(got, [1], 'nothing delivered twice, nothing held');
  assert.deepEqual(gaps, []);
});

test('a service that takes fewer channels per request than were sent: the helper halves its requests until it does', async () => {
  const world = fakeWorld({ maxChannels: 1 });
  const pusher = await connected(world);
  const names = ['private-a', 'private-b', 'public-c'];
  const channels = names.map((name) => pusher.subscribe(name));
  await until(() => channels.every((c) => c.subscribed) &&
    names.every((name) => world.state.requests.some((r) => r.answer?.channels[name]?.position)));
  const got = [];
  channels[2].bind('n', (d) => got.push(d.n));
  await dropAndReturn(world, pusher, { away: () => world.publish('public-c', 'n', { n: 1 }) });
  await until(() => got.length === 1);
  assert.deepEqual(got, [1]);
  assert.ok(world.state.requests.slice(-3).every((r) => r.body.channels.length === 1), 'one channel per request from then on');
});

test('in a page, the recover URL is beside the authorization endpoint as configUrl resolves it, not on the page\'s origin', async () => {
  // The service hands out a relative endpoint (/auth/old); a page is on another origin.
  globalThis.location = { href: 'http://page.example/app/' };
  try {
    const world = fakeWorld();
    const pusher = await connected(world);
    await subscribed(world, pusher);
    const anchor = world.state.requests.at(-1);
    assert.equal(anchor.url, 'http://svc/recover/old');
  } finally {
    delete globalThis.location;
  }
});

test("a browser's fetch is called as a plain function (as a method of another object it throws Illegal invocation)", async () => {
  const world = fakeWorld();
  // As window.fetch behaves: any `this` but the global object (or none) is refused.
  const strictFetch = function (...args) {
    if (this !== undefined && this !== globalThis) throw new TypeError("Failed to execute 'fetch' on 'Window': Illegal invocation");
    return world.fetch(...args);
  };
  const pusher = await connected(world, { fetch: strictFetch });
  const { got, gaps } = await subscribed(world, pusher);
  world.publish('private-a', 'n', { n: 1 });
  await dropAndReturn(world, pusher, { away: () => world.publish('private-a', 'n', { n: 2 }) });
  assert.deepEqual(got, [1, 2]);
  assert.deepEqual(gaps, []);
});
