// Recovery across replicas: two service replicas on one redis-server behind
// nginx (the recipe's snippets, round robin), events published through replica
// A, helper clients authorizing and recovering through nginx (either replica).
// Then the window is made shorter than the outage (a hot reload on both): each
// client is told of the gap once, on its channel, and nothing is repeated.
import * as w from '../world.mjs';

/** `text` with `anchor` replaced; throws when the anchor is gone (a config edit must not silently do nothing). */
function edit(text, anchor, replacement) {
  if (!text.includes(anchor)) throw new Error(`config edit: ${anchor} is not in the config`);
  return text.replace(anchor, replacement);
}

export default async function () {
  const { Pusher, PusherServer, SERVICE_BIN, assert, assertEqual, clients, connect, cutProxy, freePort, fs, nginxWithRecipe,
    path, root, serviceConfig, servicePort, sleep, start, stop, suite, waitForHttp, work, wsPort, adminPort } = w;
  const N = Number(process.env.RECOVERY_REDIS_CLIENTS || 20);
  await suite.test(`recovery with Redis: ${N} clients, two replicas behind nginx, events buffered through one and recovered through either; an outage longer than the window: one recovery_gap each, nothing repeated`, async () => {
    const dir = path.join(work, 'recovery-redis');
    fs.mkdirSync(dir, { recursive: true });
    const log = fs.createWriteStream(path.join(dir, 'processes.log'), { flags: 'a' });
    const [redisPort, nginxPort] = [await freePort(), await freePort()];
    const replicas = [];
    const procs = [];
    const config = (r, windowSecs) => {
      let c = serviceConfig(0);
      c = edit(c, `listen = "127.0.0.1:${servicePort}"`, `listen = "127.0.0.1:${r.port}"`);
      c = edit(c, `admin_listen = "127.0.0.1:${adminPort}"`, `admin_listen = "127.0.0.1:${r.admin}"`);
      c = edit(c, 'secret = "host-webhook-secret"', `secret = "host-webhook-secret"\nstate = "redis"\nredis_url = "redis://127.0.0.1:${redisPort}/0"`);
      c = edit(c, '[recovery]\nwindow_secs = 120', `[recovery]\nwindow_secs = ${windowSecs}`);
      return c;
    };
    const proxy = await cutProxy(wsPort);
    const got = [];
    let n = 0;
    let stop_ = false;
    try {
      procs.push(start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { log }));
      for (const name of ['a', 'b']) {
        const r = { name, port: await freePort(), admin: await freePort(), file: path.join(dir, `replica-${name}.toml`) };
        fs.writeFileSync(r.file, config(r, 60));
        r.proc = start(SERVICE_BIN, ['serve', '--config', r.file], { log });
        procs.push(r.proc);
        await waitForHttp(`http://127.0.0.1:${r.port}/healthz`);
        replicas.push(r);
      }
      fs.writeFileSync(path.join(dir, 'nginx.conf'), nginxWithRecipe({ root, work: dir, upstreams: replicas.map((r) => r.port), listen: nginxPort }));
      procs.push(start(process.env.NGINX_BIN || 'nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { log }));
      await waitForHttp(`http://127.0.0.1:${nginxPort}/pusher/dual-auth/healthz`);
      const publisher = new PusherServer({ appId: 'dual', key: 'publisher-key', secret: 'publisher-secret', host: '127.0.0.1', port: replicas[0].port, useTLS: false });
      const options = {
        wsHost: '127.0.0.1', wsPort: proxy.port, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
        channelAuthorization: { headers: { Authorization: 'Bearer alice' } },
      };
      await Promise.all(Array.from({ length: N }, async (_, i) => {
        const r = { i, numbers: [], gaps: [] };
        r.pusher = await connect(Pusher, { configUrl: `http://127.0.0.1:${nginxPort}/pusher/dual-auth/client-config`, uid: `recovery-redis-${i}`, options });
        clients.push(r.pusher);
        r.channel = r.pusher.subscribe('private-recovery-redis');
        r.channel.bind('tick', (d) => r.numbers.push(d.n));
        r.channel.bind('pusher-dual-auth:recovery_gap', (g) => r.gaps.push(g));
        got.push(r);
      }));
      const subscribed = async (what, ms) => {
        const until = Date.now() + ms;
        while (!got.every((r) => r.pusher.connection.state === 'connected' && r.channel.subscribed)) {
          assert(Date.now() < until, `${what}: ${got.filter((r) => r.channel.subscribed).length} of ${N} subscribed`);
          await sleep(200);
        }
      };
      await subscribed('first subscription', 30000);
      (async () => {
        while (!stop_) {
          const t = Date.now();
          await publisher.trigger('private-recovery-redis', 'tick', { n: ++n }).catch(() => {});
          await sleep(Math.max(0, 50 - (Date.now() - t)));
        }
      })();
      // 1. A 3 s outage inside the 60 s window: every number, once, in order.
      await sleep(1500);
      await proxy.cut(3000);
      await subscribed('after a 3 s outage', 100000);
      await sleep(2000);
      for (const r of got) {
        assertEqual(w.gapsAndRepeats(r.numbers), [], `client ${r.i}: lost or repeated events through the replicas`);
        assertEqual(r.gaps, [], `client ${r.i}: no recovery_gap inside the window`);
      }
      // 2. The window shortened to 5 s on both replicas (hot reload), then an outage of about 16 s.
      for (const r of replicas) fs.writeFileSync(r.file, config(r, 5));
      const reloaded = async () => (await Promise.all(replicas.map(async (r) =>
        (await (await fetch(`http://127.0.0.1:${r.admin}/status`)).json()).recovery?.window_secs === 5))).every(Boolean);
      const until = Date.now() + 15000;
      while (!(await reloaded())) {
        assert(Date.now() < until, 'both replicas reloaded the shorter window');
        await sleep(200);
      }
      const before = got.map((r) => r.numbers.length);
      await proxy.cut(3000);
      await subscribed('after the outage longer than the window', 100000);
      await sleep(3000);
      stop_ = true;
      await sleep(1000);
      for (const r of got) {
        const after = r.numbers.slice(before[r.i] - 1);
        const repeats = after.filter((x, k) => k > 0 && x <= after[k - 1]);
        assertEqual(repeats, [], `client ${r.i}: nothing repeated across the gap`);
        assertEqual(r.gaps.length, 1, `client ${r.i}: one recovery_gap (${JSON.stringify(r.gaps)})`);
        assertEqual([r.gaps[0].channel, r.gaps[0].reason], ['private-recovery-redis', 'evicted'], `client ${r.i}: the gap says what is known`);
        const jumps = w.gapsAndRepeats(after);
        assert(jumps.length === 1, `client ${r.i}: the numbers jump once, where the window ran out: ${JSON.stringify(jumps)} (gap ${JSON.stringify(r.gaps[0])})`);
      }
      console.log(`     recovery with Redis: ${n} events through replica a, recovered through nginx to both replicas`);
    } finally {
      stop_ = true;
      proxy.close();
      for (const p of procs.reverse()) await stop(p);
    }
  }, 300000);
}
