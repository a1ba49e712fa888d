// The rollout: clients move between apps.
import * as w from '../world.mjs';

export default async function () {
  const { ADMIN, APPS, HOST_ORIGIN, NGINX, Pusher, PusherServer, SERVICE, assert, assertEqual, client, clients,
    connect, fs, host, launchChromium, path, rolloutBucket, serviceConfig, servicePort, sleep, suite, work,
    wsPort } = w;
  await suite.test('rollout: 100 live pusher-js clients move to the new app at 50 %, without a new object, and back at 0 %', async () => {
    const N = 100;
    const roll = [];
    for (let i = 0; i < N; i++) {
      const switches = [];
      // Every fifth client reaches the service only through the nginx recipe.
      const viaNginx = i % 5 === 0;
      const pusher = await connect(Pusher, {
        configUrl: viaNginx ? `${NGINX}/pusher/dual-auth/client-config` : `${SERVICE}/client-config`,
        uid: `roll-${i}`,
        onSwitch: (from, to) => switches.push(`${from}->${to}`),
        options: {
          wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
          channelAuthorization: { transport: 'ajax', headers: { Authorization: 'Bearer alice' } },
        },
      });
      pusher.errors = [];
      clients.push(pusher);
      const priv = pusher.subscribe('private-roll');
      const pres = pusher.subscribe('presence-roll');
      const got = [];
      priv.bind('rolled', (d) => got.push(d));
      roll.push({ i, pusher, priv, pres, got, switches, viaNginx });
    }
    const onApp = (key) => roll.filter((r) => r.pusher.key === APPS[key].key).length;
    const allSubscribed = () => roll.every((r) => r.priv.subscribed && r.pres.subscribed);
    const waitFor = async (what, ok, ms) => {
      const until = Date.now() + ms;
      while (!ok()) {
        if (Date.now() > until) throw new Error(`timed out: ${what}`);
        await sleep(100);
      }
    };
    await waitFor('all subscribed at 0 %', allSubscribed, 20000);
    assertEqual(onApp('old'), N, 'at 0 % everyone is on old');
    // One Chromium page too, as a user whose bucket (fixed whatever the percent) is below 50 %.
    // The service does not say a uid's bucket; it is the documented formula (docs/rollout.md).
    let uid = null;
    for (let k = 0; uid === null; k++) {
      if (rolloutBucket(APPS.old.id, APPS.new.id, `browser-${k}`) < 5000) uid = `browser-${k}`;
    }
    const browser = await launchChromium(path.join(work, 'chromium-rollout'));
    clients.push({ disconnect: () => browser.close() }); // closed by the suite's cleanup if a step fails
    const page = await browser.newPage();
    await page.goto(`${HOST_ORIGIN}/rollout.html?service=${encodeURIComponent(SERVICE)}&ws=${wsPort}&uid=${uid}`);
    await page.waitForFunction('window.__roll && window.__roll.ready && window.__roll.subscribed', { timeout: 20000 });
    assertEqual(await page.evaluate('window.__roll.key'), APPS.old.key, 'the page starts on old');
    // What the service assigns each uid at 50 % (the same bucket every time).
    const objects = roll.map((r) => r.pusher);

    fs.writeFileSync(path.join(work, 'service.toml'), serviceConfig(50));
    const started = Date.now();
    await sleep(1000); // the reload, then the announcement
    const expected = [];
    for (const r of roll) expected.push((await (await fetch(`${SERVICE}/client-config?uid=roll-${r.i}`)).json()).app);
    const wantNew = expected.filter((a) => a === 'new').length;
    assert(wantNew >= 35 && wantNew <= 65, `50 % assigns ${wantNew} of ${N} to new`);
    await waitFor('the assigned clients moved', () => onApp('new') === wantNew, 3000 + 5000);
    const moveSecs = ((Date.now() - started) / 1000).toFixed(1);
    await waitFor('all re-subscribed after the switch', allSubscribed, 10000);
    // Behind the proxy the helper was handed endpoints under its prefix, on the app it is on now.
    for (const r of roll.filter((r) => r.viaNginx)) {
      const app = r.pusher.key === APPS.new.key ? 'new' : 'old';
      assertEqual(r.pusher.options.channelAuthorization.endpoint, `${NGINX}/pusher/dual-auth/auth/${app}`, `roll-${r.i} endpoint`);
    }
    assert(roll.some((r) => r.viaNginx && r.pusher.key === APPS.new.key), 'a client behind nginx moved to new');
    roll.forEach((r, k) => assertEqual(r.pusher.key === APPS.new.key ? 'new' : 'old', expected[k], `roll-${r.i} on its assigned app`));
    assert(roll.every((r, k) => r.pusher === objects[k]), 'the same Pusher objects');
    // onSwitch comes once the move is complete (the second connection closed after its grace).
    const movedOnce = () => roll.filter((r) => r.switches.length === 1 && r.switches[0] === 'old->new').length;
    await waitFor('onSwitch once per moved client', () => movedOnce() === wantNew, 5000);
    // The page moved too, without a reload, and its private channel works on the new app.
    await page.waitForFunction(`window.__roll.key === ${JSON.stringify(APPS.new.key)} && window.__roll.subscribed`, { timeout: 10000 });
    await page.waitForFunction('window.__roll.switches.length === 1', { timeout: 5000 });
    assertEqual(await page.evaluate('window.__roll.switches'), ['old->new'], 'the page switched once');

    // An event published once through the fan-out reaches every client exactly once, on either app.
    const publisher = new PusherServer({ appId: 'dual', key: 'publisher-key', secret: 'publisher-secret', host: '127.0.0.1', port: servicePort, useTLS: false });
    await publisher.trigger('private-roll', 'rolled', { n: 1 });
    await publisher.trigger('private-roll-browser', 'rolled', { n: 2 });
    await page.waitForFunction('window.__roll.events.length === 1', { timeout: 5000 });
    await waitFor('the event everywhere', () => roll.every((r) => r.got.length >= 1), 5000);
    await sleep(300);
    assert(roll.every((r) => r.got.length === 1), 'exactly once each');

    // Rollback: percent 0 brings everyone back to old.
    fs.writeFileSync(path.join(work, 'service.toml'), serviceConfig(0));
    await waitFor('everyone back on old', () => onApp('old') === N, 1000 + 3000 + 5000);
    await waitFor('all re-subscribed after the rollback', allSubscribed, 10000);
    await page.waitForFunction(`window.__roll.key === ${JSON.stringify(APPS.old.key)} && window.__roll.subscribed`, { timeout: 10000 });
    await page.screenshot({ path: path.join(work, 'rollout.png') });
    // The status page marks both changes (to 50 %, back to 0 %) on its timeline.
    await sleep(1500); // one more sample after the rollback
    await page.goto(`${ADMIN}/status.html`);
    await page.waitForSelector('body[data-loaded="yes"]', { timeout: 10000 });
    const marks = await page.evaluate(() => [...document.querySelectorAll('line.rollout-change')].length);
    const labels = await page.evaluate(() => [...document.querySelectorAll('#chart text')].map((t) => t.textContent));
    await page.screenshot({ path: path.join(work, 'status-rollout.png'), fullPage: true });
    assert(marks >= 2 && labels.includes('→ 50%') && labels.includes('→ 0%'), `rollout changes on the status page: ${marks} marks, ${labels}`);
    await browser.close();
    console.log(`     rollout: ${wantNew}/${N} moved to new within ${moveSecs} s of the reload (spread 3 s), all ${N} back on old after rollback; the Chromium page moved and came back too`);
  }, 90000);
}
