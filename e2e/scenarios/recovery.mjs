// Recovery across a reconnect: helper clients reach sockudo through a proxy
// that cuts every connection and refuses new ones for a while (a tunnel, a
// proxy restart), with a numbered event published through the fan-out at
// 20 Hz all the time. pusher-js reconnects by itself; the helper then fetches
// what the channel missed. Every client must see every number between its
// first and last exactly once, in order, with no recovery_gap.
import * as w from '../world.mjs';

export default async function () {
  const { HOST_ORIGIN, PusherServer, Pusher, SERVICE, assert, assertEqual, clients, connect, launchChromium, path, servicePort,
    sleep, suite, work, wsPort } = w;
  const N = Number(process.env.RECOVERY_CLIENTS || 100);
  const outages = (process.env.RECOVERY_OUTAGES || '3,30').split(',').map(Number);
  await suite.test(`recovery: ${N} clients, every connection cut and new ones refused for ${outages.join(' s, then ')} s, an event at 20 Hz through the fan-out: every number exactly once, in order`, async () => {
    const proxy = await w.cutProxy(wsPort);
    // One client is a Chromium page (the helper as a browser runs it), through the same proxy.
    const browser = await launchChromium(path.join(work, 'chromium-recovery'));
    const page = await browser.newPage();
    let pageLoaded = false;
    // What the page saw of the service, shown when the page's numbers fail.
    const pageLog = [];
    page.on('console', (m) => pageLog.push(`console: ${m.text()}`));
    page.on('pageerror', (e) => pageLog.push(`page error: ${e && e.message}`));
    page.on('requestfailed', (r) => pageLog.push(`failed: ${r.method()} ${r.url()} ${r.failure() && r.failure().errorText}`));
    page.on('response', (r) => { if (!r.url().includes('/pusher')) pageLog.push(`${r.request().method()} ${r.url()} ${r.status()}`); });
    const publisher = new PusherServer({ appId: 'dual', key: 'publisher-key', secret: 'publisher-secret', host: '127.0.0.1', port: servicePort, useTLS: false });
    const got = [];
    let n = 0;
    let publishErrors = 0;
    let stop = false;
    try {
      const options = {
        wsHost: '127.0.0.1', wsPort: proxy.port, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
        channelAuthorization: { headers: { Authorization: 'Bearer alice' } },
      };
      await Promise.all(Array.from({ length: N }, async (_, i) => {
        const r = { i, numbers: [], gaps: [], sockets: new Set() };
        r.pusher = await connect(Pusher, { configUrl: `${SERVICE}/client-config`, uid: `recovery-${i}`, options });
        clients.push(r.pusher);
        r.channel = r.pusher.subscribe('private-recovery');
        r.channel.bind('tick', (d) => r.numbers.push(d.n));
        r.channel.bind('pusher-dual-auth:recovery_gap', (g) => r.gaps.push(g));
        r.sockets.add(r.pusher.connection.socket_id);
        r.pusher.connection.bind('connected', () => r.sockets.add(r.pusher.connection.socket_id));
        got.push(r);
      }));
      const subscribed = async (what, ms) => {
        const until = Date.now() + ms;
        const pageBack = async () => !pageLoaded || (await page.evaluate('window.__roll.subscribed'));
        while (!got.every((r) => r.pusher.connection.state === 'connected' && r.channel.subscribed) || !(await pageBack())) {
          assert(Date.now() < until, `${what}: ${got.filter((r) => r.channel.subscribed).length} of ${N} subscribed`);
          await sleep(200);
        }
      };
      await subscribed('first subscription', 30000);
      await page.goto(`${HOST_ORIGIN}/rollout.html?service=${encodeURIComponent(SERVICE)}&ws=${proxy.port}&uid=recovery-browser&ticks=private-recovery`);
      await page.waitForFunction('window.__roll && window.__roll.ready && window.__roll.subscribed', { timeout: 20000 });
      pageLoaded = true;
      (async () => {
        while (!stop) {
          const t = Date.now();
          await publisher.trigger('private-recovery', 'tick', { n: ++n }).catch(() => publishErrors++);
          await sleep(Math.max(0, 50 - (Date.now() - t)));
        }
      })();
      for (const outage of outages) {
        await sleep(1500);
        const cutAt = Date.now();
        const before = n;
        await proxy.cut(outage * 1000);
        // pusher-js waits out an attempt's timeout after a refused one (15 s, 30 s, 60 s).
        await subscribed(`after a ${outage} s outage`, (outage + 95) * 1000);
        const back = (Date.now() - cutAt) / 1000;
        // Caught up: every client has every number published up to the moment all were back.
        const target = n;
        const allBack = Date.now();
        while (!got.every((r) => r.numbers[r.numbers.length - 1] >= target)) {
          assert(Date.now() - allBack < 20000, `caught up after a ${outage} s outage`);
          await sleep(20);
        }
        const caughtUp = Date.now() - allBack;
        await sleep(2000);
        console.log(`     recovery: ${outage} s outage, ${n - before} events published meanwhile, every client back within ` +
          `${back.toFixed(1)} s, and all ${N} caught up ${caughtUp} ms after the last was back`);
      }
      stop = true;
      await sleep(1500); // the last events arrive
    } finally {
      stop = true;
      proxy.close();
    }
    const ticks = await page.evaluate('window.__roll.ticks');
    await browser.close();
    if (w.gapsAndRepeats(ticks).length) console.log(`     the Chromium page saw: ${pageLog.filter((l) => !l.includes('WebSocket')).slice(-30).join(' | ')}`);
    assertEqual(w.gapsAndRepeats(ticks), [], 'the Chromium page: lost or repeated events');
    assertEqual(ticks[ticks.length - 1], n, 'the Chromium page got the last number');
    assertEqual(publishErrors, 0, 'every publish accepted');
    for (const r of got) {
      assertEqual(w.gapsAndRepeats(r.numbers), [], `client ${r.i}: lost or repeated events`);
      assertEqual(r.numbers[r.numbers.length - 1], n, `client ${r.i} got the last number`);
      assert(r.sockets.size > outages.length, `client ${r.i} really reconnected (${r.sockets.size} socket ids)`);
      assertEqual(r.gaps, [], `client ${r.i}: no recovery_gap`);
    }
  }, 400000);
}
