// pusher-dual-auth client helper: connect pusher-js to the app the rollout
// assigns (GET /client-config), and move the live connection when the rollout
// changes, without a reload or a new Pusher object. No dependencies, no build
// step; works in browsers and Node (pusher-js >= 8.4 for live switching).

/**
 * @param {any} Pusher  the pusher-js constructor
 * @param {import('./pusher-dual-auth').ConnectOptions} settings
 * @returns {Promise<any>} the Pusher instance, once its first connection is established
 */
export async function connect(Pusher, settings) {
  const { configUrl, uid, options = {}, onSwitch, fetch: fetchImpl = globalThis.fetch, random = Math.random } = settings;
  const base = typeof location !== 'undefined' ? location.href : undefined;
  const url = new URL(configUrl, base);
  if (uid !== undefined && uid !== null) url.searchParams.set('uid', String(uid));

  const read = async () => {
    const res = await fetchImpl(url.toString(), { credentials: 'include', cache: 'no-store' });
    if (!res.ok) throw new Error(`client-config: HTTP ${res.status}`);
    return res.json();
  };

  // Only these come from the service; everything else is the app's own options and survives switches.
  const optionsFor = (cfg) => ({
    ...options,
    ...cfg.client_options,
    cluster: cfg.cluster,
    channelAuthorization: {
      ...(options.channelAuthorization || {}),
      endpoint: new URL(cfg.channelAuthorization.endpoint, url).toString(),
    },
    userAuthentication: {
      ...(options.userAuthentication || {}),
      endpoint: new URL(cfg.userAuthentication.endpoint, url).toString(),
    },
  });

  let current = await read();
  const pusher = new Pusher(current.key, optionsFor(current));
  let version = current.version;
  let pending = null;

  const apply = (next) => {
    if (next.app === current.app && next.key === current.key) {
      current = next;
      return;
    }
    const from = current.app;
    current = next;
    if (typeof pusher.switchCluster !== 'function') return; // pusher-js < 8.4: applies at the next page load
    pusher.options = { ...pusher.options, ...optionsFor(next) };
    pusher.switchCluster({ appKey: next.key, cluster: next.cluster });
    if (onSwitch) onSwitch(from, next.app);
  };
  const recheck = async () => {
    try {
      apply(await read());
    } catch (e) {
      // Keep the current app; the next reconnect or announcement tries again.
    }
  };

  const control = pusher.subscribe(current.control_channel);
  control.bind('rollout-changed', (data) => {
    const event = typeof data === 'string' ? JSON.parse(data) : data;
    if (!event || event.version === version) return; // replicas announce the same change once each
    version = event.version;
    clearTimeout(pending);
    const spreadMs = Math.max(0, Number(event.spread_secs) || 0) * 1000;
    pending = setTimeout(recheck, Math.floor(random() * spreadMs));
  });

  await new Promise((resolve, reject) => {
    const done = () => {
      pusher.connection.unbind('connected', done);
      resolve();
    };
    pusher.connection.bind('connected', done);
    pusher.connection.bind('failed', () => reject(new Error('pusher: connection failed')));
  });
  // Clients that missed an announcement (offline, reconnecting) re-read on reconnect.
  let first = true;
  pusher.connection.bind('connected', () => {
    if (first) {
      first = false;
      return;
    }
    recheck();
  });
  return pusher;
}
