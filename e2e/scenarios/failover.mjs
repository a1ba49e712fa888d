// Failover (docs/failover.md), end to end: one service replica with [failover]
// (probe_secs 1, fail_after_secs 3), each app behind its own faultProxy in front
// of the suite's sockudo (WebSocket and REST), N helper clients on the old app at
// rollout 0 %, a numbered event through the fan-out (success = "any") at 20 Hz.
//
//   cut:       the old app's proxy resets every connection and refuses new ones.
//              Every client is on the new app within 15 s, told onFailover once
//              (old -> new), every number exactly once and in order, one
//              subscription_succeeded per channel reaching the app.
//   blackhole: the old app's proxy holds every connection and forwards nothing
//              (a partition): the same, within 30 s (the helper's silence watchdog).
//   return:    return = "auto" (return_after_secs 5): after the cut ends, every
//              client is back on old, losslessly, told onFailover(new, old, "return").
//   flapping:  old down 2 s, up 2 s, five times: each client moves at most once,
//              every number exactly once and in order.
//
// FAILOVER_CLIENTS (default 40) sets N. Detect time (cut -> /client-config names
// the failover) and move times are printed.
import * as w from '../world.mjs';
import { failoverFleet, helperClients, lossless, lostContext, pct, publishing, waitUntil } from '../failover-world.mjs';

/** What the fleet's /client-config says of failover now (null: none), for a uid that is not a client's. */
async function failoverNow(fleet) {
  try {
    const res = await fetch(`${fleet.configUrl}?uid=failover-watch`);
    const body = await res.json();
    return body.failover || null;
  } catch {
    return undefined; // unreachable: not a decision
  }
}

/** Samples /client-config's `failover` every 100 ms: when it first named each decision, and every change. */
function watchDecision(fleet) {
  const seen = { changes: [], stopped: false, current: null };
  seen.done = (async () => {
    while (!seen.stopped) {
      const f = await failoverNow(fleet);
      if (f !== undefined && JSON.stringify(f) !== JSON.stringify(seen.current)) {
        seen.changes.push({ at: Date.now(), failover: f });
        seen.current = f;
      }
      await w.sleep(100);
    }
  })();
  seen.stop = async () => {
    seen.stopped = true;
    await seen.done;
  };
  /** When /client-config first said `to` is where clients go (a failover object with that `to`), after `since`. */
  seen.firstTo = (to, since) => (seen.changes.find((c) => c.at >= since && c.failover && c.failover.to === to) || {}).at;
  seen.firstNone = (since) => (seen.changes.find((c) => c.at >= since && c.failover === null) || {}).at;
  return seen;
}

const secs = (ms) => (ms / 1000).toFixed(1);
const summary = (xs) => `p50 ${secs(pct(xs, 50))} s, max ${secs(Math.max(...xs))} s`;

export default async function () {
  const { assert, assertEqual, sleep, suite } = w;
  const N = Number(process.env.FAILOVER_CLIENTS || 40);

  /**
   * One outage of the old app (`fault`: 'cut' or 'blackhole'), clients on old at
   * first: everyone must be on new within `withinMs`, losslessly.
   */
  async function outage(name, fault, withinMs) {
    const fleet = await failoverFleet(`failover-${name}`);
    let clientsOf = null;
    let pub = null;
    let seen = null;
    try {
      const channel = `private-failover-${name}`;
      clientsOf = await helperClients(fleet, N, channel, `failover-${name}`);
      const { got } = clientsOf;
      await waitUntil(() => `every client subscribed on old: ${JSON.stringify(clientsOf.where())}`, () => clientsOf.all('old'), 30000);
      assertEqual(await failoverNow(fleet), null, 'no failover before the outage');
      seen = watchDecision(fleet);
      pub = publishing(fleet, channel);
      await sleep(1500);
      clientsOf.watch();
      const cutAt = Date.now();
      fleet.proxies.old[fault]();
      // Wait beyond the bound, so the failure message can say how far off it was.
      await waitUntil(() => `every client on new after the ${fault}: ${JSON.stringify(clientsOf.where())}; ` +
        `/client-config failover: ${JSON.stringify(seen.current)}; publishes ${pub.n} ok, ${pub.errors} failed`,
      () => clientsOf.all('new'), withinMs + 30000).catch((e) => {
        throw new Error(`${e.message}\n     not on new: ${clientsOf.stuck((r) => clientsOf.live(r) && clientsOf.appOf(r) === 'new', cutAt)}`);
      });
      const allNew = Date.now();
      // Caught up: every client has every number published up to now.
      const target = pub.n;
      await waitUntil(() => `caught up to ${target}: ${got.filter((r) => r.numbers[r.numbers.length - 1] >= target).length} of ${N}`,
        () => got.every((r) => r.numbers[r.numbers.length - 1] >= target), 20000, 20);
      await sleep(1500);
      await pub.stop();
      await sleep(1500); // the last events arrive
      clientsOf.unwatch();
      const detect = seen.firstTo('new', cutAt);
      const moves = got.map((r) => r.onNewAt - cutAt);
      console.log(`     failover ${name}: ${N} clients; /client-config named new ${detect ? `${secs(detect - cutAt)} s` : 'never'} after the ${fault}; ` +
        `clients on new ${summary(moves)} after it (all by ${secs(allNew - cutAt)} s); ${pub.n} events, ${pub.errors} publishes failed (slowest ${pub.slowest} ms)`);
      assert(detect, `/client-config never named new as the failover target (changes: ${JSON.stringify(seen.changes)})`);
      const late = got.filter((r) => r.onNewAt - cutAt > withinMs);
      assertEqual(late.map((r) => `client ${r.i} ${secs(r.onNewAt - cutAt)} s`), [], `clients on new later than ${withinMs / 1000} s after the ${fault} (${summary(moves)})`);
      assertEqual(lossless(got, pub.n, 1), [], `events and subscriptions (${pub.n} published; times after the ${fault}:${lostContext(got, pub, cutAt)})`);
      const told = got.filter((r) => !(r.failovers.length === 1 && r.failovers[0].from === 'old' && r.failovers[0].to === 'new'));
      assertEqual(told.map((r) => `client ${r.i}: ${JSON.stringify(r.failovers.map((f) => [f.from, f.to, f.reason]))}`), [],
        'each client told onFailover once, ("old", "new", …)');
      assertEqual(pub.errors, 0, `every publish accepted with success = "any" (last error: ${pub.lastError})`);
    } finally {
      if (pub) await pub.stop();
      if (seen) await seen.stop();
      if (clientsOf) clientsOf.disconnect();
      await fleet.stop();
    }
  }

  await suite.test(`failover cut: ${N} helper clients on old, the old app's connections reset and new ones refused, 20 Hz through the fan-out: all on new within 15 s, every number once, in order, one onFailover each`,
    () => outage('cut', 'cut', 15000), 120000);

  await suite.test(`failover blackhole: ${N} helper clients on old, the old app black-holed (connections held, nothing forwarded): all on new within 30 s, every number once, in order, one onFailover each`,
    () => outage('blackhole', 'blackhole', 30000), 150000);

  await suite.test(`failover return: return = "auto", ${N} helper clients: on new after a cut of old, back on old once it has been healthy 5 s, every number once, in order, onFailover(new, old, "return")`, async () => {
    const fleet = await failoverFleet('failover-return', { failover: { return: 'auto', return_after_secs: 5 } });
    let clientsOf = null;
    let pub = null;
    let seen = null;
    try {
      const channel = 'private-failover-return';
      clientsOf = await helperClients(fleet, N, channel, 'failover-return');
      const { got } = clientsOf;
      await waitUntil(() => `every client subscribed on old: ${JSON.stringify(clientsOf.where())}`, () => clientsOf.all('old'), 30000);
      seen = watchDecision(fleet);
      pub = publishing(fleet, channel);
      await sleep(1500);
      clientsOf.watch();
      const cutAt = Date.now();
      fleet.proxies.old.cut();
      await waitUntil(() => `every client on new after the cut: ${JSON.stringify(clientsOf.where())}; /client-config failover: ${JSON.stringify(seen.current)}`,
        () => clientsOf.all('new'), 45000);
      const movedAt = Date.now();
      await sleep(1000);
      const restoredAt = Date.now();
      await fleet.proxies.old.restore();
      await waitUntil(() => `every client back on old after the cut ended: ${JSON.stringify(clientsOf.where())}; ` +
        `/client-config failover: ${JSON.stringify(seen.current)}; onFailover e.g. ${JSON.stringify(got[0].failovers)}`,
      () => clientsOf.all('old'), 45000).catch((e) => {
        throw new Error(`${e.message}\n     not back on old (times after the cut ended): ${clientsOf.stuck((r) => clientsOf.live(r) && clientsOf.appOf(r) === 'old', restoredAt)}`);
      });
      const backAt = Date.now();
      const target = pub.n;
      await waitUntil(() => `caught up to ${target}: ${got.filter((r) => r.numbers[r.numbers.length - 1] >= target).length} of ${N}`,
        () => got.every((r) => r.numbers[r.numbers.length - 1] >= target), 20000, 20);
      await sleep(1500);
      await pub.stop();
      await sleep(1500);
      clientsOf.unwatch();
      const ended = seen.firstNone(restoredAt);
      console.log(`     failover return: all on new ${secs(movedAt - cutAt)} s after the cut; the cut ended, /client-config said no failover ` +
        `${ended ? `${secs(ended - restoredAt)} s` : 'never'} later, all back on old ${secs(backAt - restoredAt)} s after the end ` +
        `(${summary(got.map((r) => r.backOldAt - restoredAt))}); ${pub.n} events`);
      assert(ended, `/client-config never ended the failover (changes: ${JSON.stringify(seen.changes)})`);
      assertEqual(lossless(got, pub.n, 1), [], `events and subscriptions (${pub.n} published; times after the cut:${lostContext(got, pub, cutAt)})`);
      const told = got.filter((r) => {
        const f = r.failovers.map((x) => [x.from, x.to, x.reason]);
        return !(f.length === 2 && f[0][0] === 'old' && f[0][1] === 'new' && f[1][0] === 'new' && f[1][1] === 'old' && f[1][2] === 'return');
      });
      assertEqual(told.map((r) => `client ${r.i}: ${JSON.stringify(r.failovers.map((f) => [f.from, f.to, f.reason]))}`), [],
        'each client told onFailover twice: ("old", "new", …) then ("new", "old", "return")');
      assertEqual(pub.errors, 0, `every publish accepted (last error: ${pub.lastError})`);
    } finally {
      if (pub) await pub.stop();
      if (seen) await seen.stop();
      if (clientsOf) clientsOf.disconnect();
      await fleet.stop();
    }
  }, 150000);

  await suite.test(`failover flapping: ${N} helper clients, old down 2 s, up 2 s, five times: each client moves at most once, every number once, in order`, async () => {
    const fleet = await failoverFleet('failover-flapping');
    let clientsOf = null;
    let pub = null;
    let seen = null;
    try {
      const channel = 'private-failover-flapping';
      clientsOf = await helperClients(fleet, N, channel, 'failover-flapping');
      const { got } = clientsOf;
      await waitUntil(() => `every client subscribed on old: ${JSON.stringify(clientsOf.where())}`, () => clientsOf.all('old'), 30000);
      seen = watchDecision(fleet);
      pub = publishing(fleet, channel);
      await sleep(1500);
      const flapAt = Date.now();
      for (let k = 0; k < 5; k++) {
        fleet.proxies.old.cut();
        await sleep(2000);
        await fleet.proxies.old.restore();
        await sleep(2000);
      }
      const flapEnd = Date.now();
      // pusher-js waits out an attempt's timeout after a refused one: give them time to be back.
      await waitUntil(() => `every client live again after the flapping: ${JSON.stringify(clientsOf.where())}`, () => clientsOf.all(), 60000, 100);
      const backAt = Date.now();
      const target = pub.n;
      await waitUntil(() => `caught up to ${target}: ${got.filter((r) => r.numbers[r.numbers.length - 1] >= target).length} of ${N}`,
        () => got.every((r) => r.numbers[r.numbers.length - 1] >= target), 20000, 20);
      await sleep(1000);
      await pub.stop();
      await sleep(1500);
      const moved = got.filter((r) => r.failovers.length > 0).length;
      const decisions = seen.changes.filter((c) => c.at >= flapAt && c.failover);
      console.log(`     failover flapping: 5 × (2 s down, 2 s up); /client-config ${decisions.length ? `named a failover ${decisions.length} time(s), first ${secs(decisions[0].at - flapAt)} s in` : 'never named a failover'}; ` +
        `${moved} of ${N} clients moved; all live ${secs(backAt - flapEnd)} s after the last flap; where: ${JSON.stringify(clientsOf.where())}; ${pub.n} events`);
      const often = got.filter((r) => r.failovers.length > 1 || r.switches.length > 1);
      assertEqual(often.map((r) => `client ${r.i}: onFailover ${JSON.stringify(r.failovers.map((f) => [f.from, f.to, f.reason]))}, ` +
        `switches ${JSON.stringify(r.switches.map((s) => [s.from, s.to]))}`), [], 'each client moved at most once');
      // pusher-js subscribes again on its own reconnects to old: subscription_succeeded is not counted here.
      assertEqual(lossless(got, pub.n, 1, { once: false }), [], `events (${pub.n} published)`);
      assertEqual(pub.errors, 0, `every publish accepted (last error: ${pub.lastError})`);
    } finally {
      if (pub) await pub.stop();
      if (seen) await seen.stop();
      if (clientsOf) clientsOf.disconnect();
      await fleet.stop();
    }
  }, 150000);
}
