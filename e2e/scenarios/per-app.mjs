// The basic cases on each app: private, presence, encrypted, sign-in, a denial.
import * as w from '../world.mjs';

export default async function () {
  const { assert, assertEqual, client, host, nextEvent, server, sleep, subscribe, suite } = w;
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
}
