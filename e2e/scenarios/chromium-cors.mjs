// Headless Chromium across origins (CORS).
import * as w from '../world.mjs';

export default async function () {
  const { APPS, HOST_ORIGIN, SERVICE, assert, assertEqual, launchChromium, path, suite, work, wsPort } = w;
  await suite.test('headless Chromium: pusher-js cross-origin through CORS, both apps', async () => {
    const browser = await launchChromium(path.join(work, 'chromium'));
    try {
      const page = await browser.newPage();
      const keys = encodeURIComponent(JSON.stringify({ old: APPS.old.key, new: APPS.new.key }));
      await page.goto(`${HOST_ORIGIN}/page.html?service=${encodeURIComponent(SERVICE)}&ws=${wsPort}&keys=${keys}`);
      await page.waitForFunction('window.__results !== null', { timeout: 30000 });
      const results = await page.evaluate('window.__results');
      await page.screenshot({ path: path.join(work, 'browser.png') });
      for (const app of ['old', 'new']) {
        assert(results[app].private.ok, `${app} private: ${JSON.stringify(results[app].private)}`);
        assertEqual(results[app].presence.me, { id: 'alice', info: { name: 'Alice' } }, `${app} presence`);
        assertEqual(results[app].denied, { ok: false, status: 403 }, `${app} denied (403 readable cross-origin)`);
      }
    } finally {
      await browser.close();
    }
  }, 60000);
}
