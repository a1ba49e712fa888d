// Native clients (asyncpusher) in the Python, Swift and Java request shapes.
import * as w from '../world.mjs';

export default async function () {
  const { assert, assertEqual, client, clients, host, nativeClient, server, suite } = w;
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
}
