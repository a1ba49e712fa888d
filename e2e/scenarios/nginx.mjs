// The nginx recipe (and Chromium through it).
import * as w from '../world.mjs';

export default async function () {
  const { APPS, NGINX, assert, assertEqual, client, here, host, launchChromium, path, suite, work, wsPort } = w;
  await suite.test('nginx recipe: the cookie reaches the host check, the proxy\'s X-Forwarded-For is honoured', async () => {
    const before = host.calls.length;
    const res = await fetch(`${NGINX}/pusher/auth-new`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: 'session=bob; theme=dark' },
      body: 'socket_id=1234.1234&channel_name=presence-nginx',
    });
    assertEqual(res.status, 200, 'status through nginx');
    const body = await res.json();
    assertEqual(JSON.parse(body.channel_data), { user_id: 'bob', user_info: { name: 'Bob' } }, 'identity from the cookie');
    const call = host.calls.slice(before).find((c) => c.channel_name === 'presence-nginx');
    assertEqual(call.token, 'bob', 'the cookie reached the session check');
    assertEqual(call.xff, '127.0.0.1, 127.0.0.1', 'client (as nginx saw it), then nginx');
    assert(/^[0-9a-f]{32}$/.test(call.requestId), `nginx's $request_id is forwarded: ${call.requestId}`);
    const old = await fetch(`${NGINX}/pusher/auth`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: 'session=bob' },
      body: 'socket_id=1234.1234&channel_name=private-nginx',
    });
    assertEqual((await old.json()).auth.split(':')[0], APPS.old.key, '/pusher/auth is the old app');
    // The rollout assignment through the same origin; query kept; plain http here, so no Secure.
    const assigned = await fetch(`${NGINX}/pusher/client-config?uid=bob`);
    assertEqual(assigned.status, 200, '/pusher/client-config through nginx');
    const endpoint = (await assigned.json()).channelAuthorization.endpoint;
    assert(/^\/pusher\/dual-auth\/auth\/(old|new)$/.test(endpoint), `an endpoint reachable through nginx: ${endpoint}`);
    const anonymous = await fetch(`${NGINX}/pusher/client-config`);
    const setCookie = anonymous.headers.get('set-cookie') || '';
    assert(setCookie.startsWith('pusher_dual_auth_rid=') && !/;\s*Secure/i.test(setCookie), `cookie over plain http: ${setCookie}`);
  });

  await suite.test('headless Chromium: same origin through nginx, the session cookie flows (no CORS)', async () => {
    const browser = await launchChromium(path.join(work, 'chromium2'));
    try {
      const page = await browser.newPage();
      const keys = encodeURIComponent(JSON.stringify({ old: APPS.old.key, new: APPS.new.key }));
      await page.goto(`${NGINX}/page.html?mode=cookie&ws=${wsPort}&keys=${keys}`);
      await page.waitForFunction('window.__results !== null', { timeout: 30000 });
      const results = await page.evaluate('window.__results');
      for (const app of ['old', 'new']) {
        assert(results[app].private.ok, `${app} private: ${JSON.stringify(results[app].private)}`);
        assertEqual(results[app].presence.me, { id: 'alice', info: { name: 'Alice' } }, `${app} presence`);
        assertEqual(results[app].denied, { ok: false, status: 403 }, `${app} denied`);
      }
    } finally {
      await browser.close();
    }
  }, 60000);
}
