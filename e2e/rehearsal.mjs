// A full migration rehearsal, as a team would run it before the real move, and
// the report it attaches to its change request.
//
// sockudo with two apps (old, new), both sending webhooks; two replicas of the
// service on one Redis behind nginx (round robin: the repo's location snippets,
// plus /webhooks and the publish route); N pusher-js clients through the JS
// helper, each on a private and a presence channel, reaching the service only
// through nginx; the host publishing a numbered event every 250 ms through the
// fan-out. Steps 0 → 10 → 50 → 100 % by rewriting the config file both
// replicas read; during the 50 % step replica A is restarted (SIGTERM, start
// again) as a rolling deploy would. It passes when no client saw a failed
// subscription or move, no event was lost or repeated on any client, every
// client ends on the new app, both replicas' /status agree at each step, and
// both finally say the old app is drained.
//
// Usage: node e2e/rehearsal.mjs [--clients 200] [--dwell 10] [--out DIR] [--config your.toml]
//          [--allowed-hosts H,…] [--allowed-origins O,…] [--allow-no-tls]
//   SERVICE_BIN, SOCKUDO_BIN, NGINX_BIN, CHROMIUM as for run.mjs (scripts/rehearse sets them).
//   --config: rehearse with your own [apps] and [rollout] from/to instead of the
//   built-in pair on sockudo (no sockudo is started; clients connect where
//   /client-config sends them). The session check, webhooks, Redis and publish
//   keys are the rehearsal's own (set through DUAL_AUTH__* variables); the
//   file's `percent = …` line in [rollout] is what the steps rewrite.
//   --allowed-hosts, --allowed-origins, --allow-no-tls: what your app passes to the
//   helper's connect() as allowedHosts, allowedOrigins, allowNoTLS (the helper refuses
//   client_options hosts, auth endpoints on other origins and forceTLS = false
//   otherwise). The built-in pair on sockudo gets 127.0.0.1 and no TLS; with --config,
//   only what you pass (REHEARSAL_SOCKUDO_PORT: --allowed-hosts 127.0.0.1 --allow-no-tls).
//
// This file runs the steps in order; each is a file in rehearsal/ (start, clients,
// publish, rollout, drain, verify, status-page, then report), a default-exported
// function that imports what the steps share from rehearsal/world.mjs (the command
// line is rehearsal/cli.mjs), as the suite's scenarios do from world.mjs.
import path from 'node:path';
import * as w from './rehearsal/world.mjs';
import startFleet from './rehearsal/start.mjs';
import connectClients from './rehearsal/clients.mjs';
import startPublishing from './rehearsal/publish.mjs';
import rollOut from './rehearsal/rollout.mjs';
import drained from './rehearsal/drain.mjs';
import checkClients from './rehearsal/verify.mjs';
import statusPage from './rehearsal/status-page.mjs';
import writeReport from './rehearsal/report.mjs';

const { assert, clients, out, procs, report, run, sleep, stop, work } = w;
let failed = false;
try {
  await startFleet();
  await connectClients();
  await startPublishing();
  await rollOut();
  const end = await drained();
  checkClients(end.lastWebhooks);
  await statusPage(end);
  assert(report.failures.length === 0, `${report.failures.length} client failure(s):\n  ${report.failures.slice(0, 20).join('\n  ')}`);
  assert(run.publishFailures === 0, `${run.publishFailures} publish(es) failed`);
} catch (e) {
  failed = true;
  report.error = String(e && e.stack ? e.stack : e);
  console.log(`REHEARSAL FAILED: ${report.error}`);
} finally {
  if (run.publishing) clearInterval(run.publishing);
  for (const c of clients) {
    try { c.pusher.disconnect(); } catch {}
  }
  await sleep(200);
  for (const p of procs.reverse()) await stop(p);
  if (run.host) run.host.server.close();
  report.finished = new Date().toISOString();
  writeReport(report, failed);
  console.log(`rehearsal ${failed ? 'FAILED' : 'passed'}: report in ${path.join(out, 'report.md')}${failed ? `, logs in ${work}` : ''}`);
  process.exit(failed ? 1 : 0);
}
