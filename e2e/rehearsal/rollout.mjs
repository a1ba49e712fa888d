// Step 4, the rollout: 10 → 50 → 100 % by rewriting the config file both replicas
// read; during the 50 % step replica A restarts (SIGTERM, start again) as a
// rolling deploy would. Each step: every client on the app /client-config
// assigns it, subscribed, and both replicas' /status agree; then it dwells.
import fs from 'node:fs';
import path from 'node:path';
import * as w from './world.mjs';

export default async function rollOut() {
  const { N, STEPS, assert, names, onApp } = w;
  for (const percent of STEPS) await step(percent);
  assert(onApp(names.to) === N, `every client ends on ${names.to}`);
}

/** One step to `percent`. */
async function step(percent) {
  const { DWELL_MS, N, RESTART_AT, agreed, configPath, countsMatch, names, replicas, report, run, sleep, status,
    withPercent } = w;
  const started = Date.now();
  const authsBefore = run.auths;
  fs.writeFileSync(configPath, withPercent(percent));
  const restart = percent === RESTART_AT ? await restartA() : '';
  // Both replicas reload the file (a watch); then where each client must end up: its assignment at this step, from the service itself.
  await agreed(`${percent} %: reloaded`, (v) => v.rollout.percent === percent, 10000).catch(async () => {
    const seen = await Promise.all(replicas.map(async (r) => (await status(r)).rollout.percent));
    if (!seen.every((p) => p === percent)) throw new Error(`${percent} %: the replicas run ${seen.join(' and ')} % 10 s after the config changed`);
  });
  const wantTo = await everyClientAssigned(percent);
  const moved = (Date.now() - started) / 1000;
  report.lastMoveMs = Date.now();
  const views = await agreed(`${percent} %`, (s) => s.rollout.percent === percent && countsMatch(s) && !s.fleet.drift && s.fleet.replicas.filter((r) => r.live).length === 2);
  const secs = (Date.now() - started) / 1000;
  await sleep(DWELL_MS);
  report.steps.push({ percent, secs: moved, onNew: wantTo, auths: run.auths - authsBefore, authRate: (run.auths - authsBefore) / secs, agreedAfter: secs, note: restart,
    statusShare: views[0].apps[names.to].recent_share });
  console.log(`step ${percent} %: ${wantTo}/${N} on ${names.to} after ${moved.toFixed(1)} s; replicas agree after ${secs.toFixed(1)} s${restart ? `; ${restart}` : ''}`);
}

/** A rolling deploy during the move: A stops gracefully and comes back on the same config. */
async function restartA() {
  const { replicas, sleep, startReplica, stop } = w;
  await sleep(1000);
  const a = replicas[0];
  const t = Date.now();
  await stop(a.proc);
  await startReplica(a);
  return `replica A restarted (SIGTERM → ready again in ${((Date.now() - t) / 1000).toFixed(1)} s)`;
}

/**
 * Waits until every client is on the app /client-config assigns it at this step, and
 * subscribed; a client left behind has its trace written to the work dir. Resolves with
 * how many are assigned the `to` app.
 */
async function everyClientAssigned(percent) {
  const { N, NGINX, allSubscribed, clients, names, run, waitFor, work } = w;
  const expected = await Promise.all(clients.map(async (c) => (await (await fetch(`${NGINX}/pusher/dual-auth/client-config?uid=${c.uid}`)).json())));
  for (const e of expected) run.keys[e.app] = e.key;
  const wantTo = expected.filter((e) => e.app === names.to).length;
  await waitFor(`${percent} %: every client on its assigned app`, () => clients.every((c, k) => c.pusher.key === expected[k].key), 30000 + N * 50)
    .catch((e) => {
      const behind = clients.filter((c, k) => c.pusher.key !== expected[k].key);
      for (const c of behind) fs.writeFileSync(path.join(work, `trace-${c.uid}.json`), JSON.stringify(c.trace));
      throw new Error(`${e.message}: ${behind.length} behind (${behind.slice(0, 5).map((c) => `${c.uid} on ${c.pusher.key}, state ${c.pusher.connection.state}, ${c.failures.join('; ') || 'no failure reported'}`).join(' | ')})`);
    });
  await waitFor(`${percent} %: every client subscribed`, allSubscribed, 20000);
  return wantTo;
}
