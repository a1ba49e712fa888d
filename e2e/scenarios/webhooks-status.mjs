// Merged webhooks and the status page.
import * as w from '../world.mjs';

export default async function () {
  const { ADMIN, PusherServer, assert, assertEqual, client, clients, here, host, launchChromium, path, sleep,
    subscribe, suite, work } = w;
  await suite.test('webhooks from both apps are merged for the host, then the status page says the old app drained', async () => {
    const verifier = new PusherServer({ appId: 'x', key: 'host-webhook-key', secret: 'host-webhook-secret', host: '127.0.0.1', port: 1 });
    const events = () =>
      host.webhooks.flatMap((w) => {
        const hook = verifier.webhook({ headers: w.headers, rawBody: w.rawBody });
        assert(hook.isValid(), 'the official SDK verifies every forwarded webhook');
        return hook.getEvents().filter((e) => e.channel === 'presence-wh');
      });
    const oldC = client('old');
    const newC = client('new');
    assert((await subscribe(oldC, 'presence-wh')).ok, 'old subscribed');
    assert((await subscribe(newC, 'presence-wh')).ok, 'new subscribed');
    await sleep(500);
    const joined = events().map((e) => e.name).sort();
    assertEqual(joined, ['channel_occupied', 'member_added'], 'occupied and joined once, though present through both apps');
    oldC.disconnect(); // the old app's side empties: sockudo reports it ~3 s later
    await sleep(4000);
    assertEqual(events().length, 2, 'still occupied and present through the new app: nothing more');
    newC.disconnect();
    await sleep(4000);
    const all = events().map((e) => e.name).sort();
    assertEqual(all, ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed'], 'vacated once, by the last app');

    // The status page, in Chromium: key numbers match /status, and the old app is drained
    // once its window (3 s here) passes without old-app auths or occupancy.
    for (const c of clients) {
      try { c.disconnect(); } catch {}
    }
    await sleep(5000);
    const json = await (await fetch(`${ADMIN}/status`)).json();
    const browser = await launchChromium(path.join(work, 'chromium3'));
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 800, height: 480 });
      await page.goto(`${ADMIN}/status.html`);
      await page.waitForSelector('body[data-loaded="yes"]', { timeout: 10000 });
      const shown = await page.evaluate(() => ({
        verdict: document.getElementById('verdict').textContent,
        old: document.querySelector('tr[data-app="old"] .signed').textContent,
        new: document.querySelector('tr[data-app="new"] .signed').textContent,
        oldOccupied: document.querySelector('tr[data-app="old"] .occupied').textContent,
        rolloutTarget: document.getElementById('rollout').dataset.target,
        clientGroups: [...document.querySelectorAll('#clients tr')].map((tr) => tr.dataset.group),
        yLabels: [...document.querySelectorAll('#chart .y-label')].map((t) => t.textContent),
        xLabels: [...document.querySelectorAll('#chart .x-label')].map((t) => t.textContent),
        points: [...document.querySelectorAll('#chart .share-point title')].map((t) => t.textContent),
        target: !!document.querySelector('#chart .rollout-target'),
      }));
      await page.screenshot({ path: path.join(work, 'status.png'), fullPage: true });
      assertEqual(shown.old, String(json.apps.old.auth_signed_total), 'old signed count on the page');
      assertEqual(shown.new, String(json.apps.new.auth_signed_total), 'new signed count on the page');
      assertEqual(shown.oldOccupied, '0', 'old occupancy on the page');
      assertEqual(shown.rolloutTarget, String(json.rollout.percent), 'the rollout target on the page');
      assertEqual(shown.clientGroups, json.clients.map((c) => c.group), 'the client builds on the page, in /status order');
      assert(shown.clientGroups.includes('Chrome 156') || shown.clientGroups.some((g) => g.startsWith('Chrome ')), `Chromium is a group: ${shown.clientGroups}`);
      assert(json.drain.drained && shown.verdict.includes('"old" app drained'), `verdict: ${shown.verdict}`);
      // The chart reads as numbers: a % axis, a clock axis, each point's counts, the target.
      assertEqual(shown.yLabels, ['0%', '25%', '50%', '75%', '100%'], 'share axis');
      assert(shown.xLabels.length === 5 && shown.xLabels.every((t) => /^\d{2}:\d{2}:\d{2}$/.test(t)), `time axis: ${shown.xLabels}`);
      assert(shown.points.length > 0 && shown.points.every((t) => /^\d{2}:\d{2}:\d{2} · (old|new): \d+% \(\d+ of \d+ auths\)$/.test(t)), `points: ${shown.points.slice(0, 3)}`);
      for (const t of shown.points) {
        const [, pct, n, total] = /(\d+)% \((\d+) of (\d+)/.exec(t).map(Number);
        assertEqual(pct, Math.round((100 * n) / total), `a point's share matches its counts: ${t}`);
      }
      assert(shown.target, 'the rollout target line');
      delete shown.points;
      console.log(`     status page: ${JSON.stringify(shown)} (screenshot ${path.join(work, 'status.png')})`);
    } finally {
      await browser.close();
    }
  }, 60000);
}
