// Each app signs for itself only.
import * as w from '../world.mjs';

export default async function () {
  const { assert, assertEqual, client, server, sleep, subscribe, suite } = w;
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
}
