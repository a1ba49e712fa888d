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
// --failover [--fault cut|blackhole]: the failover drill instead (docs/failover.md).
// The same fleet (sockudo with the built-in pair, two replicas on Redis behind
// nginx, N helper clients through nginx, each on a private channel, all on the
// old app at 0 %), with [failover] on (probe_secs 1, fail_after_secs 3), each
// app reachable only through its own TCP proxy (WebSocket and REST: rest_url and
// client_options point at it), and a numbered event through the fan-out every
// 50 ms (success = "any", one at a time, in order). Then the old app is failed
// for real at its proxy: `cut` (the default) resets every connection and refuses
// new ones, `blackhole` holds every connection open and forwards nothing. It
// reports the detect time (the fault -> both replicas' /client-config name the
// failover), each client's move time (the fault -> connected and subscribed on
// the new app; p50, p90, max), and events lost and repeated per client; it
// passes only when every client moved within 60 s, each told onFailover once,
// nothing lost or repeated, and both replicas' /status name the same decision.
// Not with --config (a real app cannot be cut here; the drill is the built-in pair's).
//
// This file runs the steps in order; each is a file in rehearsal/ (start, clients,
// publish, rollout, drain, verify, status-page, then report), a default-exported
// function that imports what the steps share from rehearsal/world.mjs (the command
// line is rehearsal/cli.mjs), as the suite's scenarios do from world.mjs.
import path from 'node:path';
import process from 'node:process';

// --failover and --fault are the drill's: taken off the command line before
// rehearsal/cli.mjs reads it (it refuses options it does not know).
const argv = process.argv;
const drill = argv.indexOf('--failover');
let fault = 'cut';
if (drill >= 0) {
  argv.splice(drill, 1);
  const f = argv.findIndex((a) => a === '--fault' || a.startsWith('--fault='));
  if (f >= 0) {
    const [flag, value] = argv[f].includes('=') ? [argv[f], argv[f].split('=')[1]] : [argv[f], argv[f + 1]];
    argv.splice(f, flag.includes('=') ? 1 : 2);
    fault = value;
  }
  if (!['cut', 'blackhole'].includes(fault)) {
    console.error(`--fault must be cut or blackhole, not ${fault}`);
    process.exit(2);
  }
  if (argv.includes('--config') || argv.some((a) => a.startsWith('--config='))) {
    console.error('--failover rehearses the built-in pair on sockudo only: a real app cannot be cut from here (drop --config)');
    process.exit(2);
  }
} else if (argv.some((a) => a === '--fault' || a.startsWith('--fault='))) {
  console.error('--fault is for --failover');
  process.exit(2);
}

if (drill >= 0) await failoverDrill(fault);
else await migration();

/** The migration rehearsal (the default). */
async function migration() {
  const w = await import('./rehearsal/world.mjs');
  const { default: startFleet } = await import('./rehearsal/start.mjs');
  const { default: connectClients } = await import('./rehearsal/clients.mjs');
  const { default: startPublishing } = await import('./rehearsal/publish.mjs');
  const { default: rollOut } = await import('./rehearsal/rollout.mjs');
  const { default: drained } = await import('./rehearsal/drain.mjs');
  const { default: checkClients } = await import('./rehearsal/verify.mjs');
  const { default: statusPage } = await import('./rehearsal/status-page.mjs');
  const { default: writeReport } = await import('./rehearsal/report.mjs');
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
}

/**
 * The failover drill (--failover, see the top of this file): the old app failed
 * at its proxy by `kind` ('cut' or 'blackhole'); what it took, per client.
 */
async function failoverDrill(kind) {
  const fs = await import('node:fs');
  const w = await import('./rehearsal/world.mjs');
  const { faultProxy, failoverDecision, gapsAndRepeats } = await import('./lib.mjs');
  const { startHost } = await import('./host.mjs');
  const { N, NGINX, Pusher, PusherServer, SOCKUDO_BIN, allowances, builtIn, configPath, connect, here, hostPort, log, nginxConfig,
    nginxPort, out, procs, redisPort, replicas, sleep, sockudoConfig, start, startReplica, status, stop, waitForHttp, withPercent,
    work, wsPort } = w;
  const MOVE_LIMIT_MS = 60000;
  const r = { kind, clients: N, started: new Date().toISOString(), failures: [], error: null };
  const proxies = {};
  const clients = [];
  let host = null;
  let publishing = null;
  let failed = false;
  const pct = (xs, q) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1))] : NaN;
  };
  const waitFor = async (what, ok, ms, every = 50) => {
    const until = Date.now() + ms;
    while (!(await ok())) {
      if (Date.now() > until) throw new Error(`timed out after ${ms} ms: ${typeof what === 'function' ? what() : what}`);
      await sleep(every);
    }
    return Date.now();
  };
  try {
    // The fleet: the host, Redis, sockudo, a proxy per app, both replicas on the drill's config, nginx.
    host = await startHost(hostPort, { pageDir: here });
    procs.push(start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { log }));
    fs.writeFileSync(path.join(work, 'sockudo.toml'), sockudoConfig());
    procs.push(start(SOCKUDO_BIN, ['--config', path.join(work, 'sockudo.toml')], { cwd: work, log }));
    for (const a of Object.values(builtIn)) await waitForHttp(`http://127.0.0.1:${wsPort}/up/${a.id}`);
    for (const app of Object.keys(builtIn)) proxies[app] = await faultProxy(wsPort);
    let config = withPercent(0);
    for (const [app, p] of Object.entries(proxies)) {
      const block = new RegExp(`(\\[apps\\.${app}\\][^\\[]*?)rest_url = "[^"]*"\\nclient_options = \\{[^}]*\\}`);
      if (!block.test(config)) throw new Error(`the drill's config: no rest_url and client_options in [apps.${app}]`);
      config = config.replace(block, `$1rest_url = "http://127.0.0.1:${p.port}"\nclient_options = { wsHost = "127.0.0.1", wsPort = ${p.port}, forceTLS = false, enabledTransports = ["ws"] }`);
    }
    config += '\n[recovery]\nwindow_secs = 120\n[failover]\nenabled = true\nprobe_secs = 1\nfail_after_secs = 3\n';
    fs.writeFileSync(configPath, config);
    // A dead app must neither fail a publish nor slow the publisher down (replicas inherit this environment).
    Object.assign(process.env, { DUAL_AUTH__PUBLISH__SUCCESS: 'any', DUAL_AUTH__PUBLISH__TIMEOUT_MS: '400', DUAL_AUTH__PUBLISH__RETRIES: '0' });
    await Promise.all(replicas.map(startReplica));
    fs.writeFileSync(path.join(work, 'nginx.conf'), nginxConfig());
    procs.push(start(process.env.NGINX_BIN || 'nginx', ['-p', work, '-c', path.join(work, 'nginx.conf'), '-g', 'daemon off;'], { log }));
    await waitForHttp(`${NGINX}/pusher/dual-auth/healthz`);
    console.log(`failover drill (${kind}): ${N} clients, replicas ${replicas.map((x) => `${x.name} :${x.port}`).join(', ')}, ` +
      `proxies old :${proxies.old.port}, new :${proxies.new.port}, nginx :${nginxPort}, work dir ${work}`);

    // The clients, all on old at 0 %.
    const keys = Object.fromEntries(Object.entries(builtIn).map(([k, a]) => [a.key, k]));
    const appOf = (c) => keys[c.pusher.key] || c.pusher.key;
    const live = (c) => c.pusher.connection.state === 'connected' && c.channel.subscribed;
    const where = () => clients.reduce((m, c) => ((m[`${appOf(c)}${live(c) ? '' : ' (not live)'}`] = (m[`${appOf(c)}${live(c) ? '' : ' (not live)'}`] || 0) + 1), m), {});
    for (let i = 0; i < N; i++) {
      const uid = `rehearsal-${i}`; // the host app knows tokens rehearsal-<n> as users
      const c = { uid, numbers: [], succeeded: 0, failovers: [], failures: [] };
      c.pusher = await connect(Pusher, {
        configUrl: `${NGINX}/pusher/dual-auth/client-config`, uid, ...allowances,
        onFailover: (from, to, reason) => c.failovers.push([from, to, reason]),
        onSwitchFailed: (from, to, e) => c.failures.push(`move ${from}->${to} failed: ${e.message}`),
        options: { disableStats: true, channelAuthorization: { transport: 'ajax', headers: { Authorization: `Bearer ${uid}` } } },
      });
      c.channel = c.pusher.subscribe('private-drill');
      c.channel.bind('tick', (d) => c.numbers.push(d.n));
      c.channel.bind('pusher:subscription_succeeded', () => c.succeeded++);
      c.channel.bind('pusher-dual-auth:recovery_gap', (g) => c.failures.push(`recovery_gap ${JSON.stringify(g)}`));
      clients.push(c);
    }
    await waitFor(() => `every client subscribed on old: ${JSON.stringify(where())}`, () => clients.every((c) => live(c) && appOf(c) === 'old'), 30000 + N * 100);

    // Publishing: one at a time, every 50 ms, through nginx.
    const publisher = new PusherServer({ appId: 'rehearsal', key: 'rehearsal-publisher-key', secret: 'rehearsal-publisher-secret', host: '127.0.0.1', port: nginxPort, useTLS: false });
    const pub = { n: 0, errors: 0, lastError: null, stopped: false };
    publishing = pub;
    pub.done = (async () => {
      while (!pub.stopped) {
        const t = Date.now();
        await publisher.trigger('private-drill', 'tick', { n: pub.n + 1 }).then(() => pub.n++, (e) => {
          pub.errors++;
          pub.lastError = `${new Date().toISOString()} ${e && e.status} ${e && e.body ? String(e.body).slice(0, 300) : e} after ${Date.now() - t} ms`;
        });
        await sleep(Math.max(0, 50 - (Date.now() - t)));
      }
    })();
    await sleep(2000);

    // The fault. Detect: each replica's /client-config names the failover; moves: each client live on new.
    const detected = {};
    const moved = new Map();
    let watching = true;
    const watchers = [
      ...replicas.map(async (x) => {
        while (watching && !detected[x.name]) {
          try {
            const f = (await (await fetch(`http://127.0.0.1:${x.port}/client-config?uid=drill-watch`)).json()).failover;
            if (f && f.to === 'new') detected[x.name] = Date.now();
          } catch {}
          await sleep(100);
        }
      }),
      (async () => {
        while (watching) {
          for (const c of clients) if (!moved.has(c) && live(c) && appOf(c) === 'new') moved.set(c, Date.now());
          await sleep(50);
        }
      })(),
    ];
    const faultAt = Date.now();
    proxies.old[kind]();
    console.log(`failover drill: the old app ${kind === 'cut' ? 'cut (connections reset, new ones refused)' : 'black-holed (connections held, nothing forwarded)'} at ${new Date(faultAt).toISOString()}`);
    try {
      await waitFor(() => `every client on new: ${JSON.stringify(where())}`, () => moved.size === N, MOVE_LIMIT_MS, 100);
    } catch (e) {
      r.failures.push(e.message);
    }
    const target = pub.n;
    await waitFor(() => `caught up to ${target}`, () => clients.every((c) => c.numbers[c.numbers.length - 1] >= target), 20000).catch((e) => r.failures.push(e.message));
    await sleep(1500);
    pub.stopped = true;
    await pub.done;
    await sleep(1500);
    watching = false;
    await Promise.all(watchers);
    const views = await Promise.all(replicas.map(status));
    const decisions = views.map(failoverDecision);

    // What it took.
    const detects = replicas.map((x) => detected[x.name]);
    r.detectMs = detects.every(Boolean) ? Math.max(...detects) - faultAt : null;
    r.detectPerReplica = Object.fromEntries(replicas.map((x) => [x.name, detected[x.name] ? detected[x.name] - faultAt : null]));
    const moves = clients.filter((c) => moved.has(c)).map((c) => moved.get(c) - faultAt);
    Object.assign(r, { movedClients: moves.length, moveP50: pct(moves, 50), moveP90: pct(moves, 90), moveMax: moves.length ? Math.max(...moves) : NaN, published: pub.n, publishErrors: pub.errors });
    r.lost = 0;
    r.repeated = 0;
    const clientFailures = [];
    for (const c of clients) {
      const first = c.numbers[0];
      const seen = new Set();
      for (const x of c.numbers) {
        if (seen.has(x)) r.repeated++;
        seen.add(x);
      }
      const missing = first === undefined ? pub.n : Array.from({ length: pub.n - first + 1 }, (_, k) => first + k).filter((x) => !seen.has(x)).length;
      r.lost += missing;
      const problems = gapsAndRepeats(c.numbers);
      if (problems.length) c.failures.push(`events: ${missing} lost, ${c.numbers.length - seen.size} repeated (${problems.slice(0, 3).join(', ')})`);
      if (first !== 1) c.failures.push(`first event ${first}`);
      if (c.succeeded !== 1) c.failures.push(`${c.succeeded} subscription_succeeded reached the app`);
      if (!(c.failovers.length === 1 && c.failovers[0][0] === 'old' && c.failovers[0][1] === 'new')) c.failures.push(`onFailover ${JSON.stringify(c.failovers)}`);
      if (!moved.has(c)) c.failures.push(`not on new within ${MOVE_LIMIT_MS / 1000} s (${appOf(c)}, ${c.pusher.connection.state})`);
      clientFailures.push(...c.failures.map((f) => `${c.uid}: ${f}`));
    }
    r.decisions = decisions;
    if (r.detectMs === null) r.failures.push(`a replica's /client-config never named the failover: ${JSON.stringify(r.detectPerReplica)}`);
    if (!decisions[0] || JSON.stringify(decisions[0]) !== JSON.stringify(decisions[1])) r.failures.push(`the replicas' /status disagree or name no decision: ${JSON.stringify(decisions)}`);
    if (pub.errors) r.failures.push(`${pub.errors} publish(es) failed (a failed one is published again with the same number: a repeat if it did arrive; last: ${pub.lastError})`);
    r.failures.push(...clientFailures); // the fleet's failures first, then each client's
    fs.writeFileSync(path.join(out, 'status.json'), JSON.stringify(views, null, 2));
    failed = r.failures.length > 0;
  } catch (e) {
    failed = true;
    r.error = String(e && e.stack ? e.stack : e);
    console.log(`FAILOVER DRILL FAILED: ${r.error}`);
  } finally {
    if (publishing) {
      publishing.stopped = true;
      await publishing.done;
    }
    for (const c of clients) {
      try { c.pusher.disconnect(); } catch {}
    }
    await sleep(200);
    for (const p of Object.values(proxies)) p.close();
    for (const p of procs.reverse()) await stop(p);
    if (host) host.server.close();
    r.finished = new Date().toISOString();
    const s = (ms) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : '–');
    const text = `# Failover drill (${kind}): ${failed ? '**FAILED**' : 'passed'}

${r.started} → ${r.finished}. ${N} pusher-js clients through the JS helper on the old app (rollout 0 %), every
request through nginx (two replicas on Redis, [failover] probe_secs 1, fail_after_secs 3); each app reachable
only through its own TCP proxy; a numbered event through the fan-out every 50 ms (success = "any").
The old app ${kind === 'cut' ? 'cut: every connection reset, new ones refused' : 'black-holed: every connection held open, nothing forwarded'}.

| detect (fault → both replicas' /client-config name new) | clients on new | move p50 | move p90 | move max | events published | lost | repeated |
|---|---|---|---|---|---|---|---|
| ${s(r.detectMs)} (${Object.entries(r.detectPerReplica || {}).map(([k, v]) => `${k} ${s(v)}`).join(', ')}) | ${r.movedClients ?? '–'} of ${N} | ${s(r.moveP50)} | ${s(r.moveP90)} | ${s(r.moveMax)} | ${r.published ?? '–'} (${r.publishErrors ?? '–'} failed) | ${r.lost ?? '–'} | ${r.repeated ?? '–'} |

- The replicas' decision (/status): ${JSON.stringify(r.decisions || null)}.
- Failures: ${r.failures.length}${r.failures.length ? '\n' + r.failures.slice(0, 30).map((f) => `  - ${f}`).join('\n') : ''}
${r.error ? `\n## Error\n\n\`\`\`\n${r.error}\n\`\`\`\n` : ''}`;
    fs.writeFileSync(path.join(out, 'report.md'), text);
    console.log(text);
    console.log(`failover drill ${failed ? 'FAILED' : 'passed'}: report in ${path.join(out, 'report.md')}${failed ? `, logs in ${work}` : ''}`);
    process.exit(failed ? 1 : 0);
  }
}
