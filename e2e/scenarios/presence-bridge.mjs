// The presence bridge: members of a bridged presence channel on one app are
// seen by the members on the other, through the JS helper (and laravel-echo on it).
import * as w from '../world.mjs';

export default async function () {
  const { APPS, Pusher, SERVICE, assert, assertEqual, clients, connect, fs, path, serviceConfig, sleep, suite, work, wsPort } = w;
  const ROOM = 'presence-bridge-room';
  const configPath = path.join(work, 'service.toml');
  const waitFor = async (what, ok, ms = 8000) => {
    const until = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > until) throw new Error(`timed out after ${ms} ms: ${what}`);
      await sleep(50);
    }
  };
  /** A helper client as uid `uid` (forced to an app by the config below), signed in as `token`. */
  const member = async (uid, token) => {
    const pusher = await connect(Pusher, {
      configUrl: `${SERVICE}/client-config`,
      uid,
      options: {
        wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
        channelAuthorization: { transport: 'ajax', headers: { Authorization: `Bearer ${token}` } },
      },
    });
    clients.push(pusher);
    const channel = pusher.subscribe(ROOM);
    const seen = { added: [], removed: [] };
    channel.bind('pusher:member_added', (m) => seen.added.push(m.id));
    channel.bind('pusher:member_removed', (m) => seen.removed.push(m.id));
    await waitFor(`${uid} subscribed`, () => channel.subscribed);
    const ids = () => {
      const out = [];
      channel.members.each((m) => out.push(m.id));
      return out.sort();
    };
    return { pusher, channel, seen, ids, app: pusher.key === APPS.new.key ? 'new' : 'old' };
  };

  await suite.test('presence bridge: members on the old and the new app see each other, once each; two apps at once count once', async () => {
    // Some users on the new app, by name: the rest stay on old (percent 0).
    const forced = serviceConfig(0).replace('[rollout]\n', '[rollout]\nforce_to = ["bridge-y", "bridge-x2", "bridge-z"]\n');
    assert(forced.includes('force_to = ["bridge-y"'), 'the force list was written into the config');
    fs.writeFileSync(configPath, forced);
    const until = Date.now() + 8000;
    while ((await (await fetch(`${SERVICE}/client-config?uid=bridge-y`)).json()).app !== 'new') {
      assert(Date.now() < until, 'the reload with force_to did not take');
      await sleep(100);
    }
    try {
      const x = await member('bridge-x', 'alice'); // old
      assertEqual(x.app, 'old', 'X is on the old app');
      const y = await member('bridge-y', 'bob'); // new
      assertEqual(y.app, 'new', 'Y is on the new app');
      const t0 = Date.now();
      await waitFor('each sees the other', () => x.ids().join() === 'alice,bob' && y.ids().join() === 'alice,bob');
      console.log(`     X (old) and Y (new) see each other ${Date.now() - t0} ms after Y subscribed`);
      await waitFor('X told once that bob joined', () => x.seen.added.length === 1);
      assertEqual(x.seen.added, ['bob'], 'X: one member_added, for bob');
      assert(y.seen.added.filter((id) => id === 'alice').length <= 1, 'Y: alice added at most once (the list may have had her at subscription)');
      assertEqual(x.channel.members.count, 2, 'X counts 2');
      assertEqual(y.channel.members.count, 2, 'Y counts 2');

      // alice opens a second tab on the new app: still one alice everywhere, nobody told anything.
      const x2 = await member('bridge-x2', 'alice');
      assertEqual(x2.app, 'new', 'X2 is on the new app');
      await sleep(1500);
      assertEqual([x.ids().join(), y.ids().join(), x2.ids().join()], ['alice,bob', 'alice,bob', 'alice,bob'], 'one list everywhere');
      assertEqual([x.seen.added.length, y.seen.added.filter((id) => id === 'alice').length <= 1], [1, true], 'no one told of a second alice');
      // The new-app tab closes: alice is still present through the old app.
      x2.pusher.disconnect();
      await sleep(4500);
      assertEqual(y.ids().join(), 'alice,bob', 'Y still lists alice (present on old)');
      assertEqual(y.seen.removed, [], 'Y told of no removal');

      // Y leaves: X is told once.
      y.pusher.disconnect();
      await waitFor('X told that bob left', () => x.seen.removed.length === 1, 10000);
      assertEqual(x.seen.removed, ['bob'], 'X: one member_removed, for bob');
      assertEqual(x.ids().join(), 'alice', 'X lists alice only');

      // laravel-echo on the helper's instance: here / joining / leaving across the apps.
      const { default: Echo } = await import('laravel-echo');
      const z = await connect(Pusher, {
        configUrl: `${SERVICE}/client-config`, uid: 'bridge-z',
        options: { wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
          channelAuthorization: { transport: 'ajax', headers: { Authorization: 'Bearer bob' } } },
      });
      clients.push(z);
      assertEqual(z.key, APPS.new.key, 'the Echo client is on the new app');
      const echo = new Echo({ broadcaster: 'pusher', client: z });
      const joining = [];
      const leaving = [];
      const here = await new Promise((resolve) => {
        echo.join('bridge-room').here(resolve).joining((u) => joining.push(u)).leaving((u) => leaving.push(u));
      });
      assertEqual(here.map((u) => u.name).sort(), ['Alice', 'Bob'], 'Echo here(): alice (old) and bob (new)');
      const v = await member('bridge-v', 'rehearsal-7'); // joins on the old app
      assertEqual(v.app, 'old', 'V is on the old app');
      await waitFor('Echo joining()', () => joining.length === 1);
      assertEqual(joining, [{ name: 'rehearsal-7' }], 'Echo joining(): the old-app member');
      v.pusher.disconnect();
      await waitFor('Echo leaving()', () => leaving.length === 1, 10000);
      assertEqual(leaving, [{ name: 'rehearsal-7' }], 'Echo leaving(): once');
      await sleep(500);
      assertEqual(joining.length, 1, 'joined once');
      echo.disconnect();
      x.pusher.disconnect();
    } finally {
      fs.writeFileSync(configPath, serviceConfig(0));
    }
  }, 60000);

  await suite.test('presence bridge: a member moved live (make-before-break) is not shown leaving and joining to anyone', async () => {
    const withForced = (uids) => {
      const text = serviceConfig(0).replace('[rollout]\n', `[rollout]\nforce_to = ${JSON.stringify(uids)}\n`);
      assert(text.includes('force_to = ['), 'the force list was written into the config');
      return text;
    };
    const assigned = async (uid, app) => {
      const until = Date.now() + 8000;
      while ((await (await fetch(`${SERVICE}/client-config?uid=${uid}`)).json()).app !== app) {
        assert(Date.now() < until, `${uid} not assigned ${app} after the reload`);
        await sleep(100);
      }
    };
    fs.writeFileSync(configPath, withForced(['bridge-q']));
    await assigned('bridge-q', 'new');
    try {
      const p = await member('bridge-p', 'rehearsal-8'); // observer on old
      const q = await member('bridge-q', 'rehearsal-9'); // observer on new
      const switches = [];
      const m = await connect(Pusher, {
        configUrl: `${SERVICE}/client-config`, uid: 'bridge-m', onSwitch: (f, t) => switches.push(`${f}->${t}`),
        onSwitchFailed: (f, t, e) => switches.push(`failed ${f}->${t}: ${e.message}`),
        options: { wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
          channelAuthorization: { transport: 'ajax', headers: { Authorization: 'Bearer rehearsal-5' } } },
      });
      clients.push(m);
      const mine = { added: [], removed: [] };
      const room = m.subscribe(ROOM);
      room.bind('pusher:member_added', (x) => mine.added.push(x.id));
      room.bind('pusher:member_removed', (x) => mine.removed.push(x.id));
      await waitFor('everyone sees everyone', () => [p, q].every((o) => o.ids().join() === 'rehearsal-5,rehearsal-8,rehearsal-9'));
      const before = JSON.stringify([p.seen, q.seen, mine]); // each observer was told once that the mover joined
      // The mover is now assigned the new app: it moves live.
      fs.writeFileSync(configPath, withForced(['bridge-q', 'bridge-m']));
      await waitFor('the member moved', () => switches.length === 1, 20000);
      assertEqual(switches, ['old->new'], 'one move');
      assertEqual(m.key, APPS.new.key, 'the mover is on the new app');
      await sleep(5000); // past the leave grace and any late bridge change
      for (const [who, o] of [['the old-app observer', p], ['the new-app observer', q]]) {
        assertEqual(o.ids().join(), 'rehearsal-5,rehearsal-8,rehearsal-9', `${who} still lists everyone`);
        assertEqual(o.seen.added.filter((id) => id === 'rehearsal-5'), ['rehearsal-5'], `${who} was told once that the mover joined, not again after its move`);
      }
      assertEqual(JSON.stringify([p.seen, q.seen, mine]), before, 'nobody was told anything by the move');
      const ids = [];
      room.members.each((x) => ids.push(x.id));
      assertEqual(ids.sort().join(), 'rehearsal-5,rehearsal-8,rehearsal-9', 'the mover still lists everyone');
      for (const c of [p.pusher, q.pusher, m]) c.disconnect();
    } finally {
      fs.writeFileSync(configPath, serviceConfig(0));
    }
  }, 60000);
}
