// End-to-end suite: real pusher-js (Node and headless Chromium), laravel-echo and
// pusher-js-auth clients on a real Pusher-protocol server (sockudo) with two apps,
// authorized by pusher-dual-auth with a real host session check. This file starts
// the processes and runs the scenarios in order.
//
// The convention, for every scenario: one file in scenarios/, whose default export
// is an async function (no arguments) that runs its cases through `suite.test`.
// It imports what the suite shares from world.mjs (`import * as w from
// '../world.mjs'`, destructured inside the function, so `host` is the one run.mjs
// set): the apps, ports and configs, the processes' addresses, the binaries, the
// client helpers, `clients` (closed at the end) and the suite; world.mjs re-exports
// lib.mjs's plumbing (start, stop, freePort, waitForHttp, assert, …). Nothing is
// passed in. The migration rehearsal (rehearsal.mjs, rehearsal/) is a program of
// its own with the same shape: rehearsal/world.mjs is what its steps share.
//
// Usage: node run.mjs   (SERVICE_BIN and SOCKUDO_BIN name the binaries; E2E_ONLY=<regex> picks cases)
import fs from 'node:fs';
import path from 'node:path';
import { start, stop, sleep, waitForHttp, assert } from './lib.mjs';
import { startHost } from './host.mjs';
import {
  APPS, HOST_ORIGIN, NGINX, SERVICE, SERVICE_BIN, SOCKUDO_BIN, clients, here, hostPort, nginxConfig, procs,
  serviceConfig, serviceLogPath, setHost, sockudoConfig, suite, work, wsPort,
} from './world.mjs';
import per_app from './scenarios/per-app.mjs';
import native from './scenarios/native.mjs';
import isolation from './scenarios/isolation.mjs';
import libraries from './scenarios/libraries.mjs';
import chromium_cors from './scenarios/chromium-cors.mjs';
import publish from './scenarios/publish.mjs';
import webhooks_status from './scenarios/webhooks-status.mjs';
import nginx from './scenarios/nginx.mjs';
import nginx_replicas from './scenarios/nginx-replicas.mjs';
import rollout from './scenarios/rollout.mjs';
import presence_bridge from './scenarios/presence-bridge.mjs';
import lossless from './scenarios/lossless.mjs';
import runbook from './scenarios/runbook.mjs';
import storm from './scenarios/storm.mjs';
import recovery from './scenarios/recovery.mjs';
import recovery_redis from './scenarios/recovery-redis.mjs';
import failover from './scenarios/failover.mjs';
import failover_redis from './scenarios/failover-redis.mjs';

// Unhandled rejections inside pusher-js (e.g. a bad channel_data) must fail the run, not hang it.
process.on('unhandledRejection', (e) => console.log(`unhandled rejection: ${e && e.stack ? e.stack : e}`));

let host;
try {
  const log = fs.createWriteStream(path.join(work, 'processes.log'));
  fs.writeFileSync(path.join(work, 'sockudo.toml'), sockudoConfig());
  fs.writeFileSync(path.join(work, 'service.toml'), serviceConfig());
  host = await startHost(hostPort, { pageDir: here });
  setHost(host);
  procs.push(start(SOCKUDO_BIN, ['--config', path.join(work, 'sockudo.toml')], { cwd: work, log }));
  const serviceLog = fs.createWriteStream(serviceLogPath);
  procs.push(start(SERVICE_BIN, ['serve', '--config', path.join(work, 'service.toml')], { log: serviceLog, env: { RUST_LOG: '' } }));
  // sockudo ignores a config it cannot parse and starts with no apps: check each app is there.
  for (const a of Object.values(APPS)) await waitForHttp(`http://127.0.0.1:${wsPort}/up/${a.id}`);
  await waitForHttp(`${SERVICE}/readyz`);
  fs.writeFileSync(path.join(work, 'nginx.conf'), nginxConfig());
  procs.push(start(process.env.NGINX_BIN || 'nginx', ['-p', work, '-c', path.join(work, 'nginx.conf'), '-g', 'daemon off;'], { log }));
  await waitForHttp(`${NGINX}/page.html`);
  console.log(`sockudo ws://127.0.0.1:${wsPort}, service ${SERVICE}, host ${HOST_ORIGIN}, work dir ${work}`);

  await per_app();
  await native();
  await isolation();
  await libraries();
  await chromium_cors();
  await publish();
  await webhooks_status();
  await nginx();
  await nginx_replicas();
  await rollout();
  await presence_bridge();
  await lossless();
  await recovery();
  await recovery_redis();
  await failover();
  await failover_redis();
  await runbook();
  await storm();

  await suite.test('the service log holds no secrets, credentials or signatures', async () => {
    const text = fs.readFileSync(serviceLogPath, 'utf8');
    assert(text.includes('"outcome":"signed"'), 'the log has decision lines');
    const banned = ['old-app-secret', 'new-app-secret', APPS.old.master, APPS.new.master, 'Bearer', 'alice"}'];
    for (const s of banned) assert(!text.includes(s), `log contains ${s}`);
    assert(!/[0-9a-f]{64}/.test(text), 'log contains a 64-hex signature');
  });
} catch (e) {
  console.log(`setup failed: ${e && e.stack ? e.stack : e}`);
  suite.failed++;
} finally {
  for (const c of clients) {
    try { c.disconnect(); } catch {}
  }
  await sleep(100);
  for (const p of procs.reverse()) await stop(p);
  if (host) host.server.close();
  suite.summary();
  if (suite.failed && process.env.CI) console.log(`logs kept in ${work}`);
  process.exit(suite.failed ? 1 : 0);
}
