// Step 2, the clients: N pusher-js clients through the JS helper, each on a
// private and a presence channel, every request through nginx as a browser on
// the host's origin would send it; all subscribed, all on the `from` app, at 0 %.
import * as w from './world.mjs';

export default async function connectClients() {
  const { N, NGINX, Pusher, allSubscribed, allowances, assert, clients, connect, names, onApp, report, run, waitFor } = w;
  // Counts every auth the clients send, and those signed per app (the fleet must count the same).
  const countingFetch = async (url, init) => {
    const res = await fetch(url, init);
    const app = /\/auth\/([^/?]+)/.exec(String(url));
    if (app) {
      run.auths++;
      if (res.status === 200) run.signedOn[app[1]] = (run.signedOn[app[1]] || 0) + 1;
      else run.refused++;
    }
    return res;
  };
  const t0 = Date.now();
  for (let i = 0; i < N; i++) clients.push(await connectOne(i, countingFetch, { NGINX, Pusher, allowances, connect, run }));
  await waitFor('every client subscribed at 0 %', allSubscribed, 30000 + N * 100);
  report.connectSecs = (Date.now() - t0) / 1000;
  const first = await (await fetch(`${NGINX}/pusher/dual-auth/client-config?uid=rehearsal-0`)).json();
  run.keys[first.app] = first.key;
  assert(first.app === names.from, `at 0 % a client is sent to ${first.app}`);
  assert(onApp(names.from) === N, `at 0 % every client is on ${names.from}`);
}

/** Client `i`, as an app would connect it, with everything it sees recorded. */
async function connectOne(i, countingFetch, { NGINX, Pusher, allowances, connect, run }) {
  const uid = `rehearsal-${i}`;
  const c = { uid, events: [], failures: [], switches: [], trace: [] };
  c.pusher = await connect(Pusher, {
    configUrl: `${NGINX}/pusher/dual-auth/client-config`,
    uid,
    fetch: countingFetch,
    retry: { onRetry: () => run.retries++ },
    onSwitch: (from, to) => c.switches.push(`${from}->${to}`),
    // What the helper saw on the tick channel, kept for the report of a client that lost an event.
    _trace: (name, source, event, data, primary, held) => {
      if (name === 'private-rehearsal') c.trace.push([Date.now(), source, event, data && data.n, primary, held]);
    },
    onSwitchFailed: (from, to, e) => c.failures.push(`move ${from}->${to} failed: ${e.message}`),
    ...allowances,
    options: {
      disableStats: true,
      channelAuthorization: { transport: 'ajax', headers: { Authorization: `Bearer ${uid}` } },
    },
  });
  c.pusher.bind('pusher:error', (e) => c.failures.push(`pusher:error ${JSON.stringify(e)}`));
  c.priv = c.pusher.subscribe('private-rehearsal');
  c.pres = c.pusher.subscribe(`presence-rehearsal-${i % 10}`);
  for (const ch of [c.priv, c.pres]) ch.bind('pusher:subscription_error', (e) => c.failures.push(`${ch.name}: ${JSON.stringify(e)}`));
  c.priv.bind('tick', (d) => {
    c.events.push(d.n);
    c.trace.push([Date.now(), 'delivered', 'tick', d.n]);
  });
  c.pusher.connection.bind('state_change', (st) => c.trace.push([Date.now(), 'state', st.previous, st.current, c.pusher.key]));
  return c;
}
