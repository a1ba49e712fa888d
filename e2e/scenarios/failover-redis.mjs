// Failover across replicas: two service replicas with [failover] on one
// redis-server ([webhooks] state = "redis") behind nginx (the recipe's snippets,
// round robin), each app behind its own faultProxy in front of sockudo, helper
// clients reading /client-config through nginx (either replica), a numbered event
// at 20 Hz through replica a. The old app is cut: both replicas' /status must
// name the same decision, and every client must end on new, losslessly.
//
// FAILOVER_REDIS_CLIENTS (default 20) sets the number of clients.
import * as w from '../world.mjs';
import { failoverDecision as statusDecision } from '../lib.mjs';
import { failoverFleet, helperClients, lossless, pct, publishing, waitUntil } from '../failover-world.mjs';

export default async function () {
  const { assert, assertEqual, sleep, suite } = w;
  const N = Number(process.env.FAILOVER_REDIS_CLIENTS || 20);
  await suite.test(`failover with Redis: two replicas behind nginx, ${N} helper clients, the old app cut: both replicas' /status name the same decision, every client ends on new, every number once, in order`, async () => {
    const fleet = await failoverFleet('failover-redis', { replicas: 2 });
    let clientsOf = null;
    let pub = null;
    try {
      const channel = 'private-failover-redis';
      clientsOf = await helperClients(fleet, N, channel, 'failover-redis');
      const { got } = clientsOf;
      await waitUntil(() => `every client subscribed on old: ${JSON.stringify(clientsOf.where())}`, () => clientsOf.all('old'), 30000);
      const before = await Promise.all(fleet.replicas.map((r) => r.status()));
      assert(before.every((s) => s.failover && typeof s.failover === 'object'),
        `/status has a failover section on both replicas (${JSON.stringify(before.map((s) => s.failover))})`);
      assertEqual(before.map(statusDecision), [null, null], 'no decision before the cut (replicas a, b)');
      pub = publishing(fleet, channel);
      await sleep(1500);
      clientsOf.watch();
      const cutAt = Date.now();
      fleet.proxies.old.cut();
      // Both replicas name the same decision, away from old.
      let views = null;
      const agreedAt = await waitUntil(() => `both replicas' /status name one decision: ${JSON.stringify(views && views.map((s) => s.failover))}`, async () => {
        views = await Promise.all(fleet.replicas.map((r) => r.status()));
        const d = views.map(statusDecision);
        return d[0] && JSON.stringify(d[0]) === JSON.stringify(d[1]);
      }, 30000, 100);
      const decision = statusDecision(views[0]);
      assert(JSON.stringify(decision).includes('"new"') && JSON.stringify(decision).includes('"old"'),
        `the decision moves clients from old to new: ${JSON.stringify(decision)}`);
      // And they keep agreeing while it holds (each reads it again every 500 ms).
      for (let k = 0; k < 5; k++) {
        await sleep(300);
        const again = (await Promise.all(fleet.replicas.map((r) => r.status()))).map(statusDecision);
        assertEqual(again[1], again[0], `replica b's decision is replica a's (sample ${k})`);
        assertEqual(again[0], decision, `the decision holds (sample ${k})`);
      }
      await waitUntil(() => `every client on new: ${JSON.stringify(clientsOf.where())}`, () => clientsOf.all('new'), 45000);
      const allNew = Date.now();
      // Through nginx, every answer (either replica) names new.
      const answers = await Promise.all(Array.from({ length: 10 }, async (_, k) => (await (await fetch(`${fleet.configUrl}?uid=failover-redis-${k}`)).json())));
      assertEqual(answers.map((a) => a.app), Array(10).fill('new'), '/client-config through nginx names new');
      const target = pub.n;
      await waitUntil(() => `caught up to ${target}: ${got.filter((r) => r.numbers[r.numbers.length - 1] >= target).length} of ${N}`,
        () => got.every((r) => r.numbers[r.numbers.length - 1] >= target), 20000, 20);
      await sleep(1000);
      await pub.stop();
      await sleep(1500);
      clientsOf.unwatch();
      const moves = got.map((r) => r.onNewAt - cutAt);
      console.log(`     failover with Redis: both replicas named ${JSON.stringify(decision)} ${((agreedAt - cutAt) / 1000).toFixed(1)} s after the cut; ` +
        `clients on new p50 ${(pct(moves, 50) / 1000).toFixed(1)} s, all by ${((allNew - cutAt) / 1000).toFixed(1)} s; ${pub.n} events`);
      assertEqual(lossless(got, pub.n, 1), [], `events and subscriptions (${pub.n} published)`);
      const told = got.filter((r) => !(r.failovers.length === 1 && r.failovers[0].from === 'old' && r.failovers[0].to === 'new'));
      assertEqual(told.map((r) => `client ${r.i}: ${JSON.stringify(r.failovers.map((f) => [f.from, f.to, f.reason]))}`), [],
        'each client told onFailover once, ("old", "new", …)');
    } finally {
      if (pub) await pub.stop();
      if (clientsOf) clientsOf.disconnect();
      await fleet.stop();
    }
  }, 150000);
}
