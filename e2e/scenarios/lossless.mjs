// The lossless live switch: helper clients 50 ms (each way) from the Pusher
// server, a numbered event published to both apps through the fan-out all the
// time, and the rollout moved 0 → 100 % and back to 0 %. Every client must see
// every number between its first and last exactly once, in order; app code
// sees no second subscription_succeeded and no presence change for a member
// that did not leave.
import net from 'node:net';
import * as w from '../world.mjs';

/** A TCP proxy to `target` that holds every chunk `delayMs` in each direction (order kept). */
async function delayProxy(target, delayMs) {
  const port = await w.freePort();
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    const pipe = (from, to) => {
      from.on('data', (chunk) => setTimeout(() => to.writable && to.write(chunk), delayMs));
      from.on('end', () => setTimeout(() => to.end(), delayMs));
    };
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { port, close: () => { for (const s of sockets) s.destroy(); server.close(); } };
}

export default async function () {
  const { ADMIN, APPS, HOST_ORIGIN, Pusher, PusherServer, SERVICE, assert, assertEqual, clients, connect, fs, launchChromium, path,
    serviceConfig, servicePort, sleep, suite, work, wsPort } = w;
  const N = Number(process.env.LOSSLESS_CLIENTS || 100);
  await suite.test(`lossless switch: ${N} clients 50 ms from the server, an event at 20 Hz to both apps, rollout 0 → 100 → 0 %: every number exactly once, in order, in Node and in a Chromium page`, async () => {
    const t0 = Date.now(); // member events and switches are logged against it when a member event fails the run
    const proxy = await delayProxy(wsPort, 50);
    const publisher = new PusherServer({ appId: 'dual', key: 'publisher-key', secret: 'publisher-secret', host: '127.0.0.1', port: servicePort, useTLS: false });
    const rolled = [];
    const moves = [];
    const browser = await launchChromium(path.join(work, 'chromium-lossless'));
    try {
      // A Chromium page through the same delaying proxy, on the same numbered channel.
      const page = await browser.newPage();
      await page.goto(`${HOST_ORIGIN}/rollout.html?service=${encodeURIComponent(SERVICE)}&ws=${proxy.port}&uid=lossless-browser&ticks=private-lossless`);
      await page.waitForFunction('window.__roll && window.__roll.ready && window.__roll.subscribed', { timeout: 20000 });
      const options = {
        wsHost: '127.0.0.1', wsPort: proxy.port, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
        channelAuthorization: { headers: { Authorization: 'Bearer alice' } },
      };
      const made = [];
      for (let i = 0; i < N + 1; i++) {
        const fast = i === N; // one client on a 100 Hz channel
        made.push((async () => {
          const r = { i, fast, numbers: [], memberEvents: [], memberLog: [], switchedAt: [], succeeded: {}, switches: [], trace: [] };
          r.pusher = await connect(Pusher, {
            configUrl: `${SERVICE}/client-config`, uid: `lossless-${i}`, options,
            onSwitch: (from, to) => { r.switches.push(`${from}->${to}`); r.switchedAt.push(Date.now() - t0); moves.push(Date.now()); },
            _trace: (ch, source, event, data, primary, held) => { if (event === 'tick') r.trace.push(`${source}:${data.n}${primary === source ? '' : '?'}${held}`); },
          });
          clients.push(r.pusher);
          const channel = r.pusher.subscribe(fast ? 'private-lossless-fast' : 'private-lossless');
          channel.bind('tick', (d) => r.numbers.push(d.n));
          const presence = r.pusher.subscribe('presence-lossless');
          for (const [name, ch] of [['private', channel], ['presence', presence]]) {
            r.succeeded[name] = 0;
            ch.bind('pusher:subscription_succeeded', () => { r.succeeded[name] += 1; });
          }
          const logMember = (sign, m) => {
            r.memberEvents.push(`${sign}${m.id}`);
            r.memberLog.push(`${sign}${m.id}@${Date.now() - t0}ms(after ${r.switches.length} switch(es), ` +
              `on ${r.pusher.key}, subscribed ${presence.subscribed}, ${presence.members.count} member(s))`);
          };
          presence.bind('pusher:member_added', (m) => logMember('+', m));
          presence.bind('pusher:member_removed', (m) => logMember('-', m));
          r.presence = presence;
          r.channel = channel;
          rolled.push(r);
        })());
      }
      await Promise.all(made);
      const until = Date.now() + 20000;
      while (!rolled.every((r) => r.channel.subscribed && r.presence.subscribed)) {
        assert(Date.now() < until, 'all subscribed through the delaying proxy');
        await sleep(100);
      }

      // The host's publishing, all the time: 20 Hz to everyone, 100 Hz to the fast client.
      let n = 0;
      let fastN = 0;
      let publishErrors = 0;
      // Each publish waits for the one before (as one host process publishing in order would).
      const every = (ms, fn) => {
        let stop = false;
        (async () => { while (!stop) { const t = Date.now(); await fn().catch(() => publishErrors++); await sleep(Math.max(0, ms - (Date.now() - t))); } })();
        return () => { stop = true; };
      };
      const stopSlow = every(50, () => publisher.trigger('private-lossless', 'tick', { n: ++n }));
      const stopQuick = every(10, () => publisher.trigger('private-lossless-fast', 'tick', { n: ++fastN }));
      const slow = { stop: stopSlow };
      const quick = { stop: stopQuick };
      // The peak auth rate on the service during the moves.
      const signedTotal = async () => {
        const text = await (await fetch(`${ADMIN}/metrics`)).text();
        return text.split('\n').filter((l) => l.startsWith('pusher_auth_requests_total') && l.includes('outcome="signed"'))
          .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
      };
      let last = await signedTotal();
      let peakPerSec = 0;
      const sampler = setInterval(async () => {
        const now = await signedTotal();
        peakPerSec = Math.max(peakPerSec, (now - last) * 2);
        last = now;
      }, 500);
      const onApp = (key) => rolled.filter((r) => r.pusher.key === APPS[key].key).length;
      const settle = async (app, what) => {
        const deadline = Date.now() + 30000;
        while (!(onApp(app) === rolled.length && rolled.every((r) => r.channel.subscribed && r.presence.subscribed) &&
          rolled.every((r) => r.switches.length === (app === 'new' ? 1 : 2)))) {
          assert(Date.now() < deadline, `${what}: ${onApp(app)} of ${rolled.length} on ${app}`);
          await sleep(200);
        }
      };
      try {
        await sleep(1000);
        const toNew = Date.now();
        moves.length = 0;
        fs.writeFileSync(path.join(work, 'service.toml'), serviceConfig(100));
        await settle('new', 'rollout to 100 %');
        await page.waitForFunction('window.__roll.switches.length === 1', { timeout: 15000 });
        const handoverToNew = (Math.max(...moves) - toNew) / 1000;
        await sleep(1000);
        moves.length = 0;
        const toOld = Date.now();
        fs.writeFileSync(path.join(work, 'service.toml'), serviceConfig(0));
        await settle('old', 'rollback to 0 %');
        await page.waitForFunction('window.__roll.switches.length === 2', { timeout: 15000 });
        const handoverToOld = (Math.max(...moves) - toOld) / 1000;
        await sleep(1000);
        slow.stop();
        quick.stop();
        await sleep(1500); // the last events arrive
        console.log(`     lossless: ${rolled.length} clients moved to new within ${handoverToNew.toFixed(1)} s and back within ` +
          `${handoverToOld.toFixed(1)} s of each reload (spread 3 s, handover included); ${n} events at 20 Hz and ${fastN} at 100 Hz ` +
          `published; peak ${peakPerSec} signed auths/s on the service`);
      } finally {
        slow.stop();
        quick.stop();
        clearInterval(sampler);
      }
      assertEqual(publishErrors, 0, 'every publish accepted');
      const shown = await page.evaluate('({ ticks: window.__roll.ticks, switches: window.__roll.switches })');
      assertEqual(shown.switches, ['old->new', 'new->old'], 'the Chromium page moved and came back');
      assertEqual(w.gapsAndRepeats(shown.ticks), [], 'the Chromium page: lost or repeated events');
      assert(shown.ticks.length > 60, `the Chromium page received through both moves (${shown.ticks.length})`);
      for (const r of rolled) {
        const problems = w.gapsAndRepeats(r.numbers);
        if (problems.length) console.log(`     client ${r.i} trace: ${r.trace.join(' ')}`);
        assertEqual(problems, [], `client ${r.i}${r.fast ? ' (100 Hz)' : ''}: lost or repeated events`);
        assert(r.numbers.length > (r.fast ? 300 : 60), `client ${r.i} received through both moves (${r.numbers.length})`);
        assertEqual(r.switches, ['old->new', 'new->old'], `client ${r.i} moved and came back`);
        assertEqual(r.succeeded, { private: 1, presence: 1 }, `client ${r.i}: one subscription_succeeded per channel`);
        if (r.memberEvents.length) {
          console.log(`     client ${r.i} member events: ${r.memberLog.join(' ')}; switched at ${r.switchedAt.join(', ')} ms`);
        }
        assertEqual(r.memberEvents, [], `client ${r.i}: no member left or joined (all are alice, on both apps)`);
        assertEqual(r.presence.members.me && r.presence.members.me.id, 'alice', `client ${r.i}: members.me`);
      }
    } finally {
      await browser.close();
      proxy.close();
    }
  }, 120000);
}
