// The nginx recipe for several replicas, as shipped: the upstream block of
// deploy/nginx/example-site.conf (its two server lines pointed at two real
// replicas) and the location snippets. Plain pusher-js clients (no helper: the
// helper retries by itself) subscribe to private channels in a loop while the
// replicas restart alternately, 2 s apart: no authorization fails.
import * as w from '../world.mjs';

/** `text` with `anchor` replaced; throws when the anchor is gone (an edit must not silently do nothing). */
function edit(text, anchor, replacement) {
  if (!text.includes(anchor)) throw new Error(`edit: ${anchor} is not in the text`);
  return text.replace(anchor, replacement);
}

/** The shipped upstream block, its example addresses replaced by the replicas' ports. */
function shippedUpstream(root, ports) {
  const site = w.fs.readFileSync(w.path.join(root, 'deploy/nginx/example-site.conf'), 'utf8');
  const blocks = site.match(/upstream pusher_dual_auth \{[^}]*\}/g);
  if (!blocks || blocks.length !== 1) throw new Error('example-site.conf: one upstream pusher_dual_auth block expected');
  let block = edit(blocks[0], '127.0.0.1:8080', `127.0.0.1:${ports[0]}`);
  block = edit(block, '127.0.0.1:8081', `127.0.0.1:${ports[1]}`);
  return block;
}

export default async function () {
  const { APPS, Pusher, SERVICE_BIN, adminPort, assert, clients, freePort, fs, nginxWithRecipe, path, root,
    serviceConfig, servicePort, sleep, start, stop, suite, waitForHttp, work, wsPort } = w;
  const N = 16;
  const SECONDS = Number(process.env.NGINX_REPLICAS_SECS || 20);
  await suite.test(`nginx-replicas: the recipe's upstream as shipped, two replicas restarted alternately 2 s apart, ${N} plain pusher-js clients: no authorization fails`, async () => {
    const dir = path.join(work, 'nginx-replicas');
    fs.mkdirSync(dir, { recursive: true });
    const log = fs.createWriteStream(path.join(dir, 'processes.log'), { flags: 'a' });
    const nginxPort = await freePort();
    const replicas = [];
    const procs = [];
    const startReplica = async (r) => {
      r.proc = start(SERVICE_BIN, ['serve', '--config', r.file], { log, env: { RUST_LOG: 'warn' } });
      procs.push(r.proc);
      await waitForHttp(`http://127.0.0.1:${r.admin}/readyz`, 10000);
    };
    let running = true;
    const tally = { signed: 0, failed: [], configs: 0, configFailed: [] };
    try {
      for (const name of ['a', 'b']) {
        const r = { name, port: await freePort(), admin: await freePort(), file: path.join(dir, `replica-${name}.toml`), pids: [] };
        let c = serviceConfig(0);
        c = edit(c, `listen = "127.0.0.1:${servicePort}"`, `listen = "127.0.0.1:${r.port}"`);
        c = edit(c, `admin_listen = "127.0.0.1:${adminPort}"`, `admin_listen = "127.0.0.1:${r.admin}"`);
        fs.writeFileSync(r.file, c);
        await startReplica(r);
        r.pids.push(r.proc.pid);
        replicas.push(r);
      }
      // nginxWithRecipe's own upstream (max_fails=0 always) swapped for the shipped one.
      let conf = nginxWithRecipe({ root, work: dir, upstreams: replicas.map((r) => r.port), listen: nginxPort });
      const generated = conf.match(/upstream pusher_dual_auth \{[^}]*\}/g);
      assert(generated && generated.length === 1, 'one upstream block in the generated config');
      conf = edit(conf, generated[0], shippedUpstream(root, replicas.map((r) => r.port)));
      fs.writeFileSync(path.join(dir, 'nginx.conf'), conf);
      procs.push(start(process.env.NGINX_BIN || 'nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { log }));
      const NGINX = `http://127.0.0.1:${nginxPort}`;
      await waitForHttp(`${NGINX}/pusher/dual-auth/healthz`);

      // 16 plain pusher-js clients, half on each app's recipe path, each subscribing
      // to a fresh private channel, then leaving it, in a loop.
      const loops = Array.from({ length: N }, async (_, i) => {
        const app = i % 2 ? 'new' : 'old';
        const p = new Pusher(APPS[app].key, {
          cluster: 'mt1', wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
          channelAuthorization: { endpoint: `${NGINX}/pusher/${app === 'old' ? 'auth' : 'auth-new'}`, transport: 'ajax', headers: { Authorization: 'Bearer alice' } },
        });
        clients.push(p);
        for (let k = 0; running; k++) {
          const name = `private-replicas-${i}-${k}`;
          const outcome = await new Promise((resolve) => {
            const ch = p.subscribe(name);
            const timer = setTimeout(() => resolve({ timeout: true }), 8000);
            ch.bind('pusher:subscription_succeeded', () => { clearTimeout(timer); resolve({ ok: true }); });
            ch.bind('pusher:subscription_error', (e) => { clearTimeout(timer); resolve({ status: e.status, error: e.error }); });
          });
          p.unsubscribe(name);
          if (outcome.ok) tally.signed++;
          else tally.failed.push({ client: i, channel: name, ...outcome });
        }
        p.disconnect();
      });
      // The helper's assignment through both of its addresses, alongside.
      const configLoop = (async () => {
        for (let k = 0; running; k++) {
          const url = `${NGINX}/pusher/${k % 2 ? 'dual-auth/' : ''}client-config?uid=replicas-${k % 50}`;
          try {
            const res = await fetch(url);
            await res.arrayBuffer();
            if (res.status === 200) tally.configs++;
            else tally.configFailed.push(`${url}: ${res.status}`);
          } catch (e) {
            tally.configFailed.push(`${url}: ${e}`);
          }
          await sleep(20);
        }
      })();

      // Restarts: a replica stopped (SIGTERM) and started again; 2 s after it answers, the
      // other. For SECONDS, and at least twice each however slow a start is.
      const until = Date.now() + SECONDS * 1000;
      let restarts = 0;
      await sleep(1000);
      for (let k = 0; Date.now() < until || restarts < 4; k++) {
        const r = replicas[k % 2];
        await stop(r.proc);
        await startReplica(r);
        r.pids.push(r.proc.pid);
        restarts++;
        await sleep(2000);
      }
      running = false;
      await Promise.all([...loops, configLoop]);

      const errors = fs.readFileSync(path.join(dir, 'nginx-error.log'), 'utf8');
      const passedOn = (errors.match(/while connecting to upstream|upstream prematurely closed|while reading response header from upstream|while sending request to upstream/g) || []).length;
      console.log(`     nginx-replicas: ${restarts} restarts (pids a ${replicas[0].pids.join('→')}, b ${replicas[1].pids.join('→')}), ` +
        `${tally.signed} subscriptions authorized, ${tally.failed.length} failed; ${tally.configs} client-configs, ` +
        `${tally.configFailed.length} failed; nginx logged ${passedOn} upstream errors it passed on`);
      assert(restarts >= 4, `the replicas restarted (${restarts} times)`);
      for (const r of replicas) assert(new Set(r.pids).size === r.pids.length && r.pids.length >= 3, `replica ${r.name} ran as new processes: ${r.pids}`);
      assert(passedOn > 0, 'nginx met a replica that was down (else the restarts tested nothing)');
      assert(tally.signed > 20 * N, `enough authorizations to mean something: ${tally.signed}`);
      assert(tally.failed.length === 0, `failed authorizations: ${tally.failed.length}, e.g. ${JSON.stringify(tally.failed.slice(0, 5))}`);
      assert(tally.configFailed.length === 0, `failed client-configs: ${tally.configFailed.slice(0, 5).join('; ')}`);
    } finally {
      running = false;
      for (const p of procs.reverse()) await stop(p);
    }
  }, 60000);
}
