// A reconnect storm against a protected host: every client authorizes its
// channels at once, the service refuses past session_check.max_in_flight (503
// with Retry-After), and the clients retry (the JS helper, and plain pusher-js
// with the documented retryingAuth handler) until every channel is subscribed.
// The host never sees more than the cap at once; a denial is never retried.
import * as w from '../world.mjs';

export default async function () {
  const { APPS, HOST_ORIGIN, Pusher, SERVICE_BIN, assert, assertEqual, clients, connect, freePort, fs, host, path,
    retryingAuth, sleep, start, stop, suite, waitForHttp, work, wsPort } = w;
  const HELPERS = Number(process.env.STORM_HELPERS || 60);
  const PLAIN = Number(process.env.STORM_PLAIN || 20);
  // A bench run sizes it up: STORM_HELPERS=500 STORM_PLAIN=500 STORM_CAP=64 STORM_DEADLINE_S=60 E2E_ONLY=storm.
  const CAP = Number(process.env.STORM_CAP || 8);
  const DEADLINE_S = Number(process.env.STORM_DEADLINE_S || 20);
  // STORM_RETRY=0: the same storm without retrying (pusher-js as it comes), for the "before" figure.
  const RETRY = process.env.STORM_RETRY !== '0';
  await suite.test(`storm: ${HELPERS} helper and ${PLAIN} plain pusher-js clients at once, host 0.5 s, max_in_flight ${CAP}: every channel subscribed within ${DEADLINE_S} s, the host never over the cap, no denial retried`, async () => {
    const dir = path.join(work, 'storm');
    fs.mkdirSync(dir, { recursive: true });
    const [port, admin] = [await freePort(), await freePort()];
    const SERVICE = `http://127.0.0.1:${port}`;
    const apps = ['old', 'new'].map((name) => `
[apps.${name}]
app_id = "${APPS[name].id}"
key = "${APPS[name].key}"
secret = "${APPS[name].secret}"
rest_url = "http://127.0.0.1:${wsPort}"
`).join('');
    fs.writeFileSync(path.join(dir, 'service.toml'), `[server]
listen = "127.0.0.1:${port}"
admin_listen = "127.0.0.1:${admin}"
[session_check]
url = "${HOST_ORIGIN}/check-slow"
timeout_ms = 3000
max_in_flight = ${CAP}
max_in_flight_per_client = ${CAP}   # every test client is 127.0.0.1: one client to the service
[rollout]
from = "old"
to = "new"
percent = 0
${apps}`);
    const log = fs.createWriteStream(path.join(dir, 'service.log'));
    const service = start(SERVICE_BIN, ['serve', '--config', path.join(dir, 'service.toml')], { log, env: { RUST_LOG: 'warn' } });
    try {
      await waitForHttp(`${SERVICE}/readyz`);
      const base = { wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true };
      const auth = { headers: { Authorization: 'Bearer alice' } };
      const channels = [];
      const denied = [];
      const watch = (pusher, name) => {
        const ch = pusher.subscribe(name);
        const entry = { name, ch, errors: [] };
        ch.bind('pusher:subscription_error', (e) => entry.errors.push(e));
        return entry;
      };
      host.slow.peak = 0;
      const started = Date.now();
      const made = [];
      for (let i = 0; i < HELPERS; i++) {
        made.push(connect(Pusher, { configUrl: `${SERVICE}/client-config`, uid: `storm-${i}`, options: { ...base, channelAuthorization: auth }, retry: RETRY ? {} : false })
          .then((pusher) => {
            clients.push(pusher);
            channels.push(watch(pusher, `private-storm-h${i}`), watch(pusher, `presence-storm-h${i}`));
          }));
      }
      for (let i = 0; i < PLAIN; i++) {
        // docs/clients.md's snippet for pusher-js without the helper (laravel-echo takes the same options).
        let pusher = null;
        pusher = new Pusher(APPS.new.key, {
          ...base, cluster: 'mt1',
          channelAuthorization: RETRY ? {
            customHandler: retryingAuth({
              endpoint: `${SERVICE}/auth/new`, headers: { Authorization: 'Bearer alice' },
              isCurrent: (socketId) => !pusher || pusher.connection.socket_id === socketId,
            }),
          } : { endpoint: `${SERVICE}/auth/new`, transport: 'ajax', headers: { Authorization: 'Bearer alice' } },
        });
        clients.push(pusher);
        channels.push(watch(pusher, `private-storm-p${i}`), watch(pusher, `presence-storm-p${i}`));
        if (i < 5) denied.push(watch(pusher, `private-storm-denied-${i}`));
      }
      await Promise.all(made);
      const until = started + DEADLINE_S * 1000;
      while (!channels.every((c) => c.ch.subscribed)) {
        if (Date.now() > until) {
          const missing = channels.filter((c) => !c.ch.subscribed);
          throw new Error(`${missing.length} of ${channels.length} channels not subscribed after ${DEADLINE_S} s: ${missing.slice(0, 3).map((c) => `${c.name} ${JSON.stringify(c.errors)}`).join('; ')}`);
        }
        await sleep(100);
      }
      const took = Date.now() - started;
      await sleep(1500); // the denied channels' answers, and any late repeat
      const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      const outcome = (name) => metrics.split('\n').filter((l) => l.startsWith('pusher_auth_requests_total') && l.includes(`"${name}"`))
        .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
      const busy = outcome('session_check_busy');
      console.log(`     storm: ${channels.length} channels of ${HELPERS + PLAIN} clients subscribed in ${(took / 1000).toFixed(1)} s; ` +
        `${busy} authorizations refused for load (503) and retried, ${outcome('session_check_timeout')} host timeouts (504); ` +
        `host peak ${host.slow.peak} at once`);
      assert(busy > 0, 'the storm did hit the cap (else this proves nothing)');
      assert(host.slow.peak <= CAP, `the host saw ${host.slow.peak} checks at once (cap ${CAP})`);
      assert(channels.every((c) => c.errors.length === 0), 'no subscription error on an allowed channel');
      for (const d of denied) {
        assertEqual(d.errors.length, 1, `${d.name}: one error`);
        assert(!d.ch.subscribed, `${d.name} not subscribed`);
        const asked = host.slow.calls.filter((c) => c.channel_name === d.name).length;
        assertEqual(asked, 1, `${d.name}: the host's 403 was not retried`);
      }
    } finally {
      await stop(service);
    }
  }, (DEADLINE_S + 40) * 1000);
}
