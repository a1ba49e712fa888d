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
  const retry = settings.retry === undefined ? {} : settings.retry;
  const base = typeof location !== 'undefined' ? location.href : undefined;
  const url = new URL(configUrl, base);
  if (uid !== undefined && uid !== null) url.searchParams.set('uid', String(uid));

  const read = async () => {
    const res = await fetchImpl(url.toString(), { credentials: 'include', cache: 'no-store' });
    if (!res.ok) throw new Error(`client-config: HTTP ${res.status}`);
    return res.json();
  };

  let pusher = null;
  let current = null;
  // Authorizations go through a retrying handler (unless the app brought its own,
  // or retry: false): refusals for load are retried at the endpoint of the app the
  // client is on at the time of each attempt.
  const retrying = (kind, own, endpointOf) => {
    if (retry === false || (own && own.customHandler)) return {};
    return {
      customHandler: retryingAuth({
        ...(own || {}),
        ...retry,
        kind,
        endpoint: () => new URL(endpointOf(current), url).toString(),
        fetch: fetchImpl,
        random,
        isCurrent: (socketId) => !pusher || !pusher.connection.socket_id || pusher.connection.socket_id === socketId,
      }),
    };
  };
  const channelHandler = retrying('channel', options.channelAuthorization, (c) => c.channelAuthorization.endpoint);
  const userHandler = retrying('user', options.userAuthentication, (c) => c.userAuthentication.endpoint);

  // Only these come from the service; everything else is the app's own options and survives switches.
  const optionsFor = (cfg) => ({
    ...options,
    ...cfg.client_options,
    cluster: cfg.cluster,
    channelAuthorization: {
      ...(options.channelAuthorization || {}),
      endpoint: new URL(cfg.channelAuthorization.endpoint, url).toString(),
      ...channelHandler,
    },
    userAuthentication: {
      ...(options.userAuthentication || {}),
      endpoint: new URL(cfg.userAuthentication.endpoint, url).toString(),
      ...userHandler,
    },
  });

  current = await read();
  pusher = new Pusher(current.key, optionsFor(current));
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

/** Statuses the service (or a proxy) answers when it is overloaded or its host too slow. */
const LOAD_STATUSES = new Set([429, 503, 504]);

/**
 * A pusher-js `customHandler` for `channelAuthorization` (kind 'channel') or
 * `userAuthentication` (kind 'user') that retries what was refused for load
 * (429, 503, 504), timed out, or failed on the network, honouring Retry-After
 * with jitter and a cap; never a denial (401, 403) or any other answer. It
 * sends what pusher-js's own ajax transport sends (a form POST with socket_id,
 * channel_name, your params and headers). pusher-js sees one answer: the
 * authorization when it finally works, or one error after giving up.
 *
 * @param {import('./pusher-dual-auth').RetryingAuthOptions} settings
 */
export function retryingAuth(settings) {
  const {
    endpoint,
    kind = 'channel',
    headers = {},
    headersProvider,
    params = {},
    paramsProvider,
    credentials = 'same-origin',
    maxAttempts = 20,
    maxDelayMs = 10000,
    giveUpAfterMs = 60000,
    timeoutMs = 10000,
    isCurrent = () => true,
    onRetry,
    fetch: fetchImpl = globalThis.fetch,
    random = Math.random,
  } = settings;
  const endpointNow = typeof endpoint === 'function' ? endpoint : () => endpoint;

  return (authParams, callback) => {
    const started = Date.now();
    const body = () => {
      const form = new URLSearchParams({ socket_id: authParams.socketId });
      if (kind === 'channel') form.set('channel_name', authParams.channelName);
      const all = { ...params, ...(paramsProvider ? paramsProvider() : {}) };
      for (const [k, v] of Object.entries(all)) form.append(k, String(v));
      return form.toString();
    };
    const attempt = async (n) => {
      const at = endpointNow();
      let status = 0;
      let retryAfterMs = null;
      let why;
      try {
        const abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), timeoutMs);
        let res;
        try {
          res = await fetchImpl(at, {
            method: 'POST',
            credentials,
            signal: abort.signal,
            headers: {
              'Content-Type': 'application/x-www-form-urlencoded',
              ...headers,
              ...(headersProvider ? headersProvider() : {}),
            },
            body: body(),
          });
        } finally {
          clearTimeout(timer);
        }
        status = res.status;
        if (status === 200) {
          const text = await res.text();
          let data;
          try {
            data = JSON.parse(text);
          } catch {
            return callback(new Error(`${kind} authorization: invalid JSON with status 200 from ${at}`), null);
          }
          return callback(null, data);
        }
        if (!LOAD_STATUSES.has(status)) {
          return callback(new Error(`${kind} authorization refused: status ${status} from ${at}`), null);
        }
        const header = Number(res.headers.get('retry-after'));
        if (Number.isFinite(header) && header >= 0) retryAfterMs = header * 1000;
        why = `status ${status}`;
      } catch (e) {
        why = e && e.name === 'AbortError' ? `no answer in ${timeoutMs} ms` : `network error (${e && e.message})`;
      }
      // Retry, unless the connection this was for is gone (pusher-js authorizes again for the new one).
      const backoff = Math.min(maxDelayMs, 500 * 2 ** (n - 1));
      const delay = Math.min(maxDelayMs, retryAfterMs === null ? backoff * (0.5 + random() / 2) : retryAfterMs + random() * 1000);
      if (n >= maxAttempts || Date.now() - started + delay > giveUpAfterMs) {
        return callback(new Error(`${kind} authorization: gave up after ${n} attempts (${why}) at ${at}`), null);
      }
      if (onRetry) onRetry({ attempt: n, delayMs: Math.round(delay), reason: why, endpoint: at });
      setTimeout(() => {
        if (!isCurrent(authParams.socketId)) return; // stale: answering it would subscribe with a dead socket's auth
        attempt(n + 1);
      }, delay);
    };
    attempt(1);
  };
}
