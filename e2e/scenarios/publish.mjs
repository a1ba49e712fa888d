// The publish fan-out.
import * as w from '../world.mjs';

export default async function () {
  const { APPS, PusherServer, assert, assertEqual, client, host, path, servicePort, sleep, subscribe, suite } =
    w;
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
}
