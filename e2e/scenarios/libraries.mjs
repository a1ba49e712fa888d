// Laravel-echo and the pusher-js-auth batch plugin.
import * as w from '../world.mjs';

export default async function () {
  const { APPS, Pusher, PusherBatchAuthorizer, SERVICE, assert, assertEqual, client, clients, here, host,
    server, sleep, subscribe, suite, wsPort } = w;
  await suite.test('laravel-echo 2.5: private and presence channels on both apps', async () => {
    const { default: Echo } = await import('laravel-echo');
    for (const app of ['old', 'new']) {
      const echo = new Echo({
        broadcaster: 'pusher', key: APPS[app].key, cluster: 'mt1', wsHost: '127.0.0.1', wsPort, forceTLS: false,
        enabledTransports: ['ws'], disableStats: true, authEndpoint: `${SERVICE}/auth/${app}`,
        auth: { headers: { Authorization: 'Bearer bob' } }, Pusher,
      });
      clients.push(echo.connector.pusher);
      const got = new Promise((resolve) => echo.private('orders').listen('.order-shipped', resolve));
      const members = new Promise((resolve) => echo.join('room').here(resolve));
      // Echo's here() lists each member's user_info.
      assertEqual(await members, [{ name: 'Bob' }], `${app} presence here()`);
      await sleep(200); // the private subscription was sent first; give it a beat
      await server(app).trigger('private-orders', 'order-shipped', { id: 7 });
      assertEqual(await got, { id: 7 }, `${app} private event`);
      echo.disconnect();
    }
  });

  await suite.test('pusher-js-auth 4.0: one batch request, per-channel results', async () => {
    const p = client('new', {
      options: {
        authEndpoint: `${SERVICE}/auth/new`,
        auth: { headers: { Authorization: 'Bearer alice' } },
        authorizer: PusherBatchAuthorizer,
      },
    });
    const before = host.calls.length;
    const [a, b, c] = await Promise.all(
      ['private-batch-a', 'presence-batch-b', 'private-denied-batch-c'].map((n) => subscribe(p, n)),
    );
    assert(a.ok, 'private-batch-a subscribed');
    assert(b.ok, 'presence-batch-b subscribed');
    assertEqual(b.members.me, { id: 'alice', info: { name: 'Alice' } }, 'batch presence identity');
    assert(!c.ok && !c.serverError, 'the denied channel failed at the auth step');
    const calls = host.calls.slice(before).filter((x) => x.channel_name && x.channel_name.includes('batch'));
    assertEqual(calls.length, 3, 'one host check per channel');
    assertEqual(new Set(calls.map((x) => x.requestId)).size, 1, 'all three came in one HTTP request');
  });
}
