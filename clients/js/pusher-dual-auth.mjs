// pusher-dual-auth client helper: connect pusher-js to the app the rollout
// assigns (GET /client-config), and move the live connection when the rollout
// changes, without a reload, a new Pusher object, or a lost or repeated event.
// No dependencies, no build step; works in browsers and Node (pusher-js >= 8.4
// for live switching).
//
// A move is make-before-break: a second connection to the target app first
// subscribes to every channel the client holds (and signs in, if it was signed
// in), through the target's auth endpoints. Only when all of that succeeded
// does the client's own instance switch (switchCluster); while it reconnects,
// the second connection keeps delivering into the same channel objects. Events
// arriving on several connections during the overlap (the client's own on the
// old app, the second one, the client's own again on the new app) are delivered
// once: per (event, data) the largest of the connections' counts, not the sum,
// so an event published to both apps arrives once and one sent twice on purpose
// arrives twice (or once per id, with the eventId option). If anything fails,
// the client stays where it is and tries again later.

/** How long a move may take before it is abandoned (the client stays). */
const HANDOVER_TIMEOUT_MS = 20000;
/** After the switch, the second connection stays this long, so late copies are matched. */
const HANDOVER_GRACE_MS = 1500;
/** Then the client's own connection keeps the filter this long: its late copies are still dropped. */
const TAIL_MS = 3000;
/**
 * Before the switch, a channel's two streams must have overlapped (one event
 * seen on both: everything before it reached the old connection, everything
 * after reaches the new one), or the old connection must have been quiet this
 * long (nothing in flight to it); at most SETTLE_MAX_MS.
 */
const SETTLE_QUIET_MS = 1500;
const SETTLE_MAX_MS = 3000;
/** A failed move is tried again after this long (plus up to as much again, spread). */
const RETRY_MOVE_MS = 30000;
/** An assignment that could not be read is read again: 1, 2, 4, 8 s (±50 %), at most this many times in all. */
const RECHECK_ATTEMPTS = 5;
const RECHECK_FIRST_MS = 1000;
const RECHECK_MAX_MS = 8000;

/**
 * The /client-config answer is not trusted (a cache, a misrouted proxy or a
 * compromised config could answer): see checkAnswer for what it may set. An
 * answer it refuses rejects connect() (or, read later, leaves the client where
 * it is and is told to onSwitchFailed), and nothing is sent where it pointed.
 *
 * @param {any} Pusher  the pusher-js constructor
 * @param {import('./pusher-dual-auth').ConnectOptions} settings
 * @returns {Promise<any>} the Pusher instance, once its first connection is established
 */
export async function connect(Pusher, settings) {
  const {
    configUrl, uid, options = {}, onSwitch, onSwitchFailed, eventId,
    fetch: fetchImpl = globalThis.fetch, random = Math.random,
    connectTimeoutMs = 20000, handoverTimeoutMs = HANDOVER_TIMEOUT_MS,
  } = settings;
  const retry = settings.retry === undefined ? {} : settings.retry;
  const base = typeof location !== 'undefined' ? location.href : undefined;
  const url = new URL(configUrl, base);
  if (uid !== undefined && uid !== null) url.searchParams.set('uid', String(uid));
  const trust = trustOf(settings, url);

  const read = async () => {
    const res = await fetchImpl(url.toString(), { credentials: 'include', cache: 'no-store' });
    if (!res.ok) throw new Error(`client-config: HTTP ${res.status} from ${url}`);
    const cfg = await res.json().catch(() => null);
    const ok = cfg && typeof cfg.app === 'string' && typeof cfg.key === 'string' &&
      cfg.channelAuthorization && typeof cfg.channelAuthorization.endpoint === 'string' &&
      cfg.userAuthentication && typeof cfg.userAuthentication.endpoint === 'string';
    if (!ok) throw new Error(`client-config: not a client-config answer from ${url}`);
    return checkAnswer(cfg, url, trust, options);
  };

  let pusher = null;
  let current = null;
  // Authorizations go through a retrying handler (unless the app brought its own,
  // or retry: false): refusals for load are retried at `endpoint()` at each attempt.
  const retrying = (kind, own, endpoint, isCurrent) => {
    if (retry === false || (own && own.customHandler)) return {};
    return { customHandler: retryingAuth({ ...(own || {}), ...retry, kind, endpoint, fetch: fetchImpl, random, isCurrent, _onBridge }) };
  };
  // Bridged presence channels: the other apps' members, as the last authorization answered (see bridgePresence).
  const bridgeSnapshots = new Map();
  const _onBridge = (channelName, members) => bridgeSnapshots.set(channelName, members);
  const live = (instance) => (socketId) =>
    !instance() || !instance().connection.socket_id || instance().connection.socket_id === socketId;
  // Only these come from the service; everything else is the app's own options and survives switches.
  // `cfgOf` gives the assignment whose endpoints the instance authorizes at.
  const optionsFor = (cfg, cfgOf, instance) => ({
    ...options,
    ...cfg.client_options,
    cluster: cfg.cluster,
    // The endpoints are checkAnswer's: absolute, on configUrl's origin or one in allowedOrigins.
    channelAuthorization: {
      ...(options.channelAuthorization || {}),
      endpoint: cfg.channelAuthorization.endpoint,
      ...retrying('channel', options.channelAuthorization, () => cfgOf().channelAuthorization.endpoint, live(instance)),
    },
    userAuthentication: {
      ...(options.userAuthentication || {}),
      endpoint: cfg.userAuthentication.endpoint,
      ...retrying('user', options.userAuthentication, () => cfgOf().userAuthentication.endpoint, live(instance)),
    },
  });

  current = await read();
  pusher = new Pusher(current.key, optionsFor(current, () => current, () => pusher));
  // Presence channels merge the members the service bridges from the other apps (laravel-echo subscribes here too).
  const subscribeHere = pusher.subscribe.bind(pusher);
  pusher.subscribe = (name) => {
    const channel = subscribeHere(name);
    if (String(name).startsWith('presence-') && !channel.__dualBridge) bridgePresence(channel, () => current.app, bridgeSnapshots);
    return channel;
  };
  let version = current.version;
  let pending = null;
  let moving = false;
  let recheckAfterMove = false;
  let again = null;

  const failed = (from, to, error) => {
    if (onSwitchFailed) onSwitchFailed(from, to, error);
    clearTimeout(again);
    again = later(recheck, RETRY_MOVE_MS + Math.floor(random() * RETRY_MOVE_MS));
  };
  const apply = async (next) => {
    if (next.app === current.app && next.key === current.key) {
      current = next;
      return;
    }
    if (moving) {
      recheckAfterMove = true; // the move under way re-checks when it ends
      return;
    }
    const from = current.app;
    if (typeof pusher.switchCluster !== 'function') {
      // pusher-js < 8.4: the client stays where it is; the assignment applies at the next page load.
      if (onSwitchFailed) onSwitchFailed(from, next.app, new Error('pusher-js without switchCluster (< 8.4): applies at the next page load'));
      return;
    }
    moving = true;
    try {
      await handover(next);
      if (onSwitch) onSwitch(from, next.app);
    } catch (e) {
      failed(from, next.app, e);
    } finally {
      moving = false;
      if (recheckAfterMove) {
        recheckAfterMove = false;
        recheck();
      }
    }
  };
  // An announcement (or reconnect) whose assignment cannot be read — a replica
  // restarting, a proxy's 502 — or is read from a replica that has not loaded
  // the announced change yet (replicas reload a moment apart; `wanted` is the
  // announced version) is read again a few times, spread: else the client would
  // stay behind for the rest of the step. A newer announcement replaces the retry.
  // An answer refused by checkAnswer is read again the same way (a cache or proxy may
  // recover); if the last read is still refused, the client stays and onSwitchFailed is told why.
  const recheck = async (attempt = 0, wanted = undefined) => {
    let next = null;
    let refusal = null;
    try {
      next = await read();
    } catch (e) {
      if (e instanceof RefusedAnswer) refusal = e; // else: read again below
    }
    const last = attempt + 1 >= RECHECK_ATTEMPTS;
    if (!next || (wanted !== undefined && next.version !== wanted && !last)) {
      if (!last) {
        clearTimeout(pending);
        const delay = Math.min(RECHECK_MAX_MS, RECHECK_FIRST_MS * 2 ** attempt);
        pending = later(() => recheck(attempt + 1, wanted), Math.floor(delay * (0.5 + random())));
      } else if (refusal && onSwitchFailed) {
        onSwitchFailed(current.app, refusal.app, refusal);
      }
      return;
    }
    await apply(next);
  };

  // Make before break: see the top of this file.
  const handover = async (next) => {
    const names = pusher.allChannels().filter((c) => c.subscribed || c.subscriptionPending).map((c) => c.name);
    let shadow = null;
    shadow = new Pusher(next.key, optionsFor(next, () => next, () => shadow));
    const overlap = names.map((name) => {
      const trace = settings._trace && ((...a) => settings._trace(name, ...a)); // for the suite's diagnosis only
      const o = { name, main: pusher.channel(name), filter: new DedupFilter(eventId && ((e, d) => eventId(name, e, d)), { trace }) };
      // Settled by the interceptor when the client's own channel is subscribed again after the switch.
      o.resubscribed = new Promise((resolve, reject) => Object.assign(o, { resolve, reject }));
      o.resubscribed.catch(() => {});
      return o;
    });
    const undo = []; // the second connection's interceptors
    const undoMine = []; // the client's own channels' interceptors
    let switched = false;
    let oldSocket = null;
    // Which of the client's own connections an event came on: messages already queued on
    // the old socket are still dispatched after switchCluster, so it is the socket id that says.
    const mine = () =>
      switched && pusher.connection.state === 'connected' && pusher.connection.socket_id !== oldSocket ? 'after' : 'before';
    try {
      await within(connected(shadow), handoverTimeoutMs, `connecting to ${next.app}`);
      const subscribed = overlap.map((o) => {
        const { name, main, filter } = o;
        const deliver = originalEmit(main);
        undoMine.push(intercept(main, (event, data, meta) => {
          // After the switch the client's own instance is another connection (on the target app):
          // an event can reach it there again, so it counts as a source of its own.
          if (!event.startsWith('pusher:')) return filter.offer(mine(), event, data, () => deliver(event, data, meta));
          if (!switched) return deliver(event, data, meta);
          if (event === 'pusher:subscription_succeeded') {
            if (main.__dualBridgeSync) main.__dualBridgeSync(); // the other apps' members, as the new app's authorization said
            memberChanges(o.membersBefore, membersOf(main), rawEmit(main));
            return o.resolve();
          }
          if (event === 'pusher:subscription_error') o.reject(new Error(`re-subscribing ${name}: ${JSON.stringify(data)}`));
          return deliver(event, data, meta);
        }));
        const copy = shadow.subscribe(name);
        const own = originalEmit(copy);
        undo.push(intercept(copy, (event, data, meta) => {
          if (event.startsWith('pusher:')) return own(event, data, meta); // the copy's own state, not the app's
          filter.offer('second', event, data, () => deliver(event, data, meta));
        }));
        return within(subscription(copy), handoverTimeoutMs, `subscribing to ${name} on ${next.app}`);
      });
      if (pusher.user && pusher.user.signin_requested) {
        shadow.signin();
        subscribed.push(within(signedIn(shadow), handoverTimeoutMs, `signing in on ${next.app}`));
      }
      await Promise.all(subscribed);
      // Events still in flight to the old connection would be lost with it: wait until the
      // streams overlap (or the old one is quiet) on every channel.
      // Quiet since the interception began, not since ever: an event published just
      // before may still be on its way to the old connection (and not to the new one).
      const settleFrom = Date.now();
      const settleBy = settleFrom + SETTLE_MAX_MS;
      const quiet = (f) => Date.now() - Math.max(f.lastSeen.get('before') || 0, settleFrom) >= SETTLE_QUIET_MS;
      while (!overlap.every((o) => o.filter.matched || quiet(o.filter)) && Date.now() < settleBy) await sleep(25);

      // Every channel is live on the target: the client's own instance moves now.
      for (const o of overlap) o.membersBefore = membersOf(o.main);
      oldSocket = pusher.connection.socket_id;
      // Once the client's own instance is connected to the new app, its old connection has
      // delivered all it will: the second connection is the primary from then on.
      const primaryNow = () => {
        if (pusher.connection.socket_id === oldSocket) return;
        pusher.connection.unbind('connected', primaryNow);
        for (const o of overlap) o.filter.setPrimary('second', ['second', 'after']);
      };
      pusher.connection.bind('connected', primaryNow);
      undoMine.push(() => pusher.connection.unbind('connected', primaryNow));
      switched = true;
      current = next;
      pusher.options = { ...pusher.options, ...optionsFor(next, () => current, () => pusher) };
      pusher.switchCluster({ appKey: next.key, cluster: next.cluster });
      await within(Promise.all(overlap.map((o) => o.resubscribed)), handoverTimeoutMs, `re-subscribing on ${next.app}`);
      await sleep(HANDOVER_GRACE_MS);
    } finally {
      for (const u of undo.reverse()) u();
      shadow.disconnect();
      const end = () => {
        for (const u of undoMine.reverse()) u();
        for (const o of overlap) o.filter.flush();
      };
      if (!switched) {
        end();
      } else {
        // The client's own connection may still bring copies of what the second one delivered.
        for (const o of overlap) o.filter.setPrimary('after', ['after']);
        later(end, TAIL_MS);
      }
    }
  };

  const control = pusher.subscribe(current.control_channel);
  control.bind('rollout-changed', (data) => {
    let event = data;
    if (typeof data === 'string') {
      try {
        event = JSON.parse(data);
      } catch {
        return; // not an announcement of ours
      }
    }
    if (!event || typeof event !== 'object' || event.version === version) return; // replicas announce a change once each
    version = event.version;
    clearTimeout(pending);
    const spreadMs = Math.max(0, Number(event.spread_secs) || 0) * 1000;
    const wanted = event.version;
    pending = later(() => recheck(0, wanted), Math.floor(random() * spreadMs));
  });

  try {
    await within(connected(pusher), connectTimeoutMs, `connecting to ${current.app}`);
  } catch (e) {
    pusher.disconnect();
    throw e;
  }
  // Clients that missed an announcement (offline, reconnecting) re-read on reconnect. Bound
  // once the first connection is up, so every 'connected' from here on is a reconnect.
  pusher.connection.bind('connected', () => {
    if (!moving) recheck();
  });
  return pusher;
}

// ---------------------------------------------------------------------------
// What the /client-config answer may set. The service never sends anything
// else, but the answer crosses a trust boundary (a cache, a misrouted proxy, a
// compromised config): the auth endpoints receive the app's headers (CSRF token,
// Authorization) and cookies, and client_options decide where pusher-js's
// WebSocket and HTTP go, whether TLS is used, and which script the stats
// transport loads (JSONP from statsHost). So:
//
// - channelAuthorization.endpoint and userAuthentication.endpoint must resolve
//   (against configUrl) to http(s) URLs on configUrl's origin or one the app
//   lists in allowedOrigins (scheme, host and port exactly), with no user:pass@,
//   whitespace, control characters or backslashes (which URL parsers drop or
//   read as slashes).
// - cluster must be a cluster name: pusher-js writes it into host names.
// - control_channel must be a public channel name: the helper joins it.
// - client_options may set only the pusher-js options below. Where the
//   connection goes (HOST_OPTIONS, PORT_OPTIONS, PATH_OPTIONS) needs the app's
//   allowedHosts; forceTLS: false needs allowNoTLS: true; turning stats on and
//   anything about authorization are the app's own options' to set. A value
//   equal to one the app passes in its own options is taken as it changes nothing.
// ---------------------------------------------------------------------------

/** An answer checkAnswer refused; `app` is the app it named (for onSwitchFailed). */
class RefusedAnswer extends Error {
  constructor(message, app) {
    super(message);
    this.name = 'RefusedAnswer';
    this.app = app;
  }
}

/** Where the WebSocket, the HTTP fallback and the stats (a JSONP script) go: only to allowedHosts. */
const HOST_OPTIONS = new Set(['wsHost', 'httpHost', 'statsHost']);
/** On those hosts (or Pusher's): with allowedHosts given, plain values only. */
const PORT_OPTIONS = new Set(['wsPort', 'wssPort', 'httpPort', 'httpsPort']);
const PATH_OPTIONS = new Set(['wsPath', 'httpPath']);
/** Tuning, taken from the service when well-formed. */
const TIME_OPTIONS = new Set(['activityTimeout', 'pongTimeout', 'unavailableTimeout']);
const TRANSPORT_OPTIONS = new Set(['enabledTransports', 'disabledTransports']);
const TRANSPORTS = new Set(['ws', 'wss', 'xhr_streaming', 'xhr_polling', 'sockjs']);
/** Authorization is the endpoints' (checked) and the app's own options', never client_options'. */
const AUTH_OPTIONS = new Set(['channelAuthorization', 'userAuthentication', 'authEndpoint', 'authTransport', 'auth', 'authorizer']);

const HOST_LABEL = '[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?';
const HOST_NAME = new RegExp(`^${HOST_LABEL}(?:\\.${HOST_LABEL})*$`, 'i');
const IPV6_HOST = /^\[[0-9a-f:.]+\]$/i;

/** A host name or IP address, nothing else (no scheme, port, path, userinfo or space): its normal form, else null. */
function hostName(value) {
  if (typeof value !== 'string' || value.length > 253 || !(HOST_NAME.test(value) || IPV6_HOST.test(value))) return null;
  try {
    const u = new URL(`http://${value}/`);
    return u.host === u.hostname ? u.hostname : null;
  } catch {
    return null;
  }
}

const isPort = (v) => {
  const n = typeof v === 'string' && /^[0-9]{1,5}$/.test(v) ? Number(v) : v;
  return Number.isInteger(n) && n >= 1 && n <= 65535;
};
/** A path pusher-js puts right after host:port: empty, or "/…" of URL path characters (no ? # \ or space). */
const isPath = (v) => typeof v === 'string' && /^(?:\/[A-Za-z0-9\-._~!$&'()*+,;=:@%]*)*$/.test(v);

/** A value for a message: JSON (quotes strings, escapes control characters), cut short. */
function show(value) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = undefined;
  }
  if (text === undefined) text = String(value);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/** The app's allowances (allowedOrigins, allowedHosts, allowNoTLS), checked: a mistake there is the app's, told at once. */
function trustOf(settings, configUrl) {
  const list = (name) => {
    const value = settings[name];
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) throw new TypeError(`connect(): ${name} must be an array, not ${show(value)}`);
    return value;
  };
  const origins = new Set([configUrl.origin]);
  for (const entry of list('allowedOrigins')) {
    let u = null;
    try {
      u = typeof entry === 'string' && !/[\s\\]/.test(entry) ? new URL(entry) : null;
    } catch {
      // not a URL
    }
    const origin = u && (u.protocol === 'https:' || u.protocol === 'http:') && !u.username && !u.password &&
      u.pathname === '/' && !u.search && !u.hash && !entry.endsWith('?') && !entry.endsWith('#');
    if (!origin) throw new TypeError(`connect(): allowedOrigins: ${show(entry)} is not an origin (scheme://host[:port], e.g. "https://auth.example.com")`);
    origins.add(u.origin);
  }
  const hosts = new Set();
  for (const entry of list('allowedHosts')) {
    const host = hostName(entry);
    if (!host) throw new TypeError(`connect(): allowedHosts: ${show(entry)} is not a host name (e.g. "ws.example.com": no scheme, port or path)`);
    hosts.add(host);
  }
  return { configOrigin: configUrl.origin, origins, hosts, noTLS: settings.allowNoTLS === true };
}

/** Why `raw` (an auth endpoint from the answer) is refused, or its absolute URL. */
function checkEndpoint(field, raw, configUrl, trust) {
  const bad = (why) => ({ problem: `${field} ${show(raw)} ${why}` });
  if (raw === '') return bad('is empty');
  // URL parsers drop tabs and newlines, trim spaces and controls, and read "\" as "/": "/\t/evil" is "//evil".
  if (/[\s\\\u0000-\u001f\u007f-\u009f]/.test(raw)) return bad('has whitespace, a control character or a backslash');
  let u;
  try {
    u = new URL(raw, configUrl);
  } catch {
    return bad('is not a URL');
  }
  // Not only for javascript: and data:: a blob: URL's origin is the origin inside it.
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return bad(`is ${u.protocol}, not http: or https:`);
  if (u.username || u.password) return bad('has credentials (user@host)');
  if (!trust.origins.has(u.origin)) {
    const listed = trust.origins.size > 1 ? ' or one in allowedOrigins' : '';
    return bad(`goes to ${u.origin}, not to ${trust.configOrigin} (configUrl's origin)${listed}: list it in allowedOrigins if it is yours`);
  }
  return { url: u.href };
}

/** Why a client_options entry is refused, or null. `own` is the app's own pusher-js options. */
function clientOptionProblem(key, value, trust, own) {
  const mine = Object.prototype.hasOwnProperty.call(own, key) && own[key] === value;
  const field = `client_options.${key}`;
  if (HOST_OPTIONS.has(key)) {
    if (mine) return null;
    const host = hostName(value);
    if (!host) return `${field} ${show(value)} is not a host name`;
    if (!trust.hosts.has(host)) return `${field} ${show(value)} is not in allowedHosts (the hosts the service may send the connection to): list it there if it is yours`;
    return null;
  }
  if (PORT_OPTIONS.has(key) || PATH_OPTIONS.has(key)) {
    if (mine) return null;
    if (PORT_OPTIONS.has(key) && !isPort(value)) return `${field} ${show(value)} is not a port (1-65535)`;
    if (PATH_OPTIONS.has(key) && !isPath(value)) return `${field} ${show(value)} is not a path ("/…" without ? # \\ or spaces)`;
    if (!trust.hosts.size) return `${field} ${show(value)}: the service may choose where the connection goes only if you give allowedHosts`;
    return null;
  }
  if (key === 'forceTLS') {
    if (typeof value !== 'boolean') return `${field} ${show(value)} is not true or false`;
    if (value === false && !mine && !trust.noTLS) return `${field} false: would turn TLS off; taken only with allowNoTLS: true`;
    return null;
  }
  if (key === 'enableStats' || key === 'disableStats') {
    if (typeof value !== 'boolean') return `${field} ${show(value)} is not true or false`;
    const on = key === 'enableStats' ? value : !value;
    if (on && !mine) return `${field} ${show(value)}: whether pusher-js sends stats (and loads a script from statsHost) is for your own options`;
    return null;
  }
  if (TIME_OPTIONS.has(key)) {
    return typeof value === 'number' && Number.isFinite(value) && value > 0 ? null : `${field} ${show(value)} is not a positive number of ms`;
  }
  if (TRANSPORT_OPTIONS.has(key)) {
    const ok = Array.isArray(value) && value.every((t) => TRANSPORTS.has(t));
    return ok ? null : `${field} ${show(value)} is not a list of pusher-js transports (${[...TRANSPORTS].join(', ')})`;
  }
  if (key === 'ignoreNullOrigin') return typeof value === 'boolean' ? null : `${field} ${show(value)} is not true or false`;
  if (key === 'cluster') return null; // the answer's own cluster (checked) is the one used
  if (AUTH_OPTIONS.has(key)) {
    return `${field}: authorization comes only from the answer's channelAuthorization / userAuthentication endpoints (checked) and your own options`;
  }
  return `${field}: not an option the helper takes from the service (set it in your own options if you want it)`;
}

/**
 * The answer as connect() uses it (endpoints absolute, client_options only what
 * may pass), or a RefusedAnswer naming every field refused, its value and why.
 */
function checkAnswer(cfg, configUrl, trust, own) {
  const problems = [];
  const channel = checkEndpoint('channelAuthorization.endpoint', cfg.channelAuthorization.endpoint, configUrl, trust);
  const user = checkEndpoint('userAuthentication.endpoint', cfg.userAuthentication.endpoint, configUrl, trust);
  for (const e of [channel, user]) if (e.problem) problems.push(e.problem);
  // pusher-js makes host names of it: ws-<cluster>.pusher.com, sockjs-<cluster>.pusher.com.
  const cluster = typeof cfg.cluster === 'string' && cfg.cluster.length <= 63 && /^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$/.test(cfg.cluster);
  if (!cluster) problems.push(`cluster ${show(cfg.cluster)} is not a cluster name (letters, digits, - and .; pusher-js puts it in host names)`);
  const control = typeof cfg.control_channel === 'string' && /^[A-Za-z0-9_\-=@,.;]{1,164}$/.test(cfg.control_channel) &&
    !/^(?:private|presence)-/.test(cfg.control_channel);
  if (!control) problems.push(`control_channel ${show(cfg.control_channel)} is not a public channel name (the helper would authorize and join it as your user)`);
  const clientOptions = {};
  const given = cfg.client_options;
  if (given !== undefined && given !== null && (typeof given !== 'object' || Array.isArray(given))) {
    problems.push(`client_options must be an object, not ${show(given)}`);
  } else {
    for (const [key, value] of Object.entries(given || {})) {
      const problem = clientOptionProblem(key, value, trust, own);
      if (problem) problems.push(problem);
      else if (key !== 'cluster') clientOptions[key] = value;
    }
  }
  if (problems.length) throw new RefusedAnswer(`client-config: refused the answer from ${configUrl}: ${problems.join('; ')}`, cfg.app);
  return {
    ...cfg,
    client_options: clientOptions,
    channelAuthorization: { endpoint: channel.url },
    userAuthentication: { endpoint: user.url },
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** setTimeout that does not keep a Node process alive by itself (a live connection does). */
function later(fn, ms) {
  const timer = setTimeout(fn, ms);
  if (timer && typeof timer.unref === 'function') timer.unref();
  return timer;
}

/** `promise`, or a rejection naming `what` after `ms`. */
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no success within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function connected(instance) {
  return new Promise((resolve, reject) => {
    if (instance.connection.state === 'connected') return resolve();
    const ok = () => {
      instance.connection.unbind('connected', ok);
      resolve();
    };
    instance.connection.bind('connected', ok);
    instance.connection.bind('failed', () => reject(new Error('pusher: connection failed')));
  });
}

/** The channel's next subscription_succeeded (or its error). */
function subscription(channel) {
  return new Promise((resolve, reject) => {
    const ok = () => {
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', bad);
      resolve();
    };
    const bad = (e) => {
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', bad);
      reject(new Error(`subscription to ${channel.name} refused: ${JSON.stringify(e)}`));
    };
    channel.bind('pusher:subscription_succeeded', ok);
    channel.bind('pusher:subscription_error', bad);
  });
}

function signedIn(instance) {
  return new Promise((resolve) => {
    const ok = (message) => {
      if (!message || message.event !== 'pusher:signin_success') return;
      instance.connection.unbind('message', ok);
      resolve();
    };
    instance.connection.bind('message', ok);
  });
}

/** The channel's emit as pusher-js defines it, bound to it. */
function rawEmit(channel) {
  const proto = Object.getPrototypeOf(channel).emit;
  return (event, data, meta) => proto.call(channel, event, data, meta);
}

/** What the channel emits through when nothing intercepts it: the presence bridge's merge, or pusher-js's own. */
function originalEmit(channel) {
  return channel.__dualBridge || rawEmit(channel);
}

/** Routes everything the channel emits through `fn`; returns the undo (a no-op once another took over). */
function intercept(channel, fn) {
  channel.emit = fn;
  return () => {
    if (channel.emit !== fn) return;
    if (channel.__dualBridge) channel.emit = channel.__dualBridge;
    else delete channel.emit;
  };
}

/** The event the service publishes for a member of another app (see the service's presence_bridge). */
const BRIDGE_EVENT = 'dual-auth:presence';
/**
 * On a bridged channel a member who leaves through this app stays listed this long:
 * one moving to another app is announced from there meanwhile, and is not shown
 * leaving and joining.
 */
const LEAVE_GRACE_MS = 3000;

/**
 * Merges into a presence channel's members the members the service bridges
 * from the other apps: at subscription, those its authorization answer listed
 * (`presence_bridge`); then each change it publishes (BRIDGE_EVENT, ordered per
 * member by the source webhook's time). `channel.members` and the standard
 * `pusher:member_added` / `pusher:member_removed` (and so laravel-echo's
 * here / joining / leaving) then cover every app, once per real change: a
 * user present through two apps is one member, until it leaves the last.
 */
function bridgePresence(channel, appNow, snapshots) {
  const emit = rawEmit(channel);
  const remote = new Map(); // app → Map(user id → info)
  const native = new Map(); // user id → info, as this app reports them
  const latest = new Map(); // app + user id → [time_ms, seq] of the last change applied
  const leaving = new Map(); // user id → timer: left through this app, held for LEAVE_GRACE_MS
  let bridged = false;
  const members = () => channel.members;
  const elsewhere = (u) => {
    for (const users of remote.values()) if (users.has(u)) return { info: users.get(u) };
    return null;
  };
  const shown = (u) => native.has(u) || leaving.has(u) || elsewhere(u) !== null;
  const put = (u, info) => {
    const m = members();
    if (!Object.prototype.hasOwnProperty.call(m.members, u)) m.count++;
    m.members[u] = info;
  };
  const drop = (u) => {
    const m = members();
    if (!Object.prototype.hasOwnProperty.call(m.members, u)) return;
    delete m.members[u];
    m.count--;
  };
  const sync = () => {
    const snapshot = snapshots.get(channel.name);
    if (snapshot && typeof snapshot === 'object') bridged = true;
    native.clear();
    members().each((m) => native.set(String(m.id), m.info));
    for (const t of leaving.values()) clearTimeout(t);
    leaving.clear();
    remote.clear();
    latest.clear();
    for (const [app, users] of Object.entries(snapshot || {})) {
      if (app === appNow() || !users || typeof users !== 'object') continue;
      remote.set(app, new Map(Object.entries(users)));
    }
    for (const users of remote.values()) for (const [u, info] of users) if (!native.has(u)) put(u, info);
  };
  const change = (raw) => {
    let d = raw;
    if (typeof d === 'string') {
      try {
        d = JSON.parse(d);
      } catch {
        return;
      }
    }
    if (!d || typeof d.app !== 'string' || d.user_id === undefined || d.app === appNow()) return;
    const u = String(d.user_id);
    const key = `${d.app}\u0000${u}`;
    const at = [Number(d.time_ms) || 0, Number(d.seq) || 0];
    const last = latest.get(key);
    if (last && (at[0] < last[0] || (at[0] === last[0] && at[1] <= last[1]))) return; // an older change, late
    latest.set(key, at);
    bridged = true;
    const before = shown(u);
    const had = elsewhere(u);
    if (!remote.has(d.app)) remote.set(d.app, new Map());
    const info = d.user_info === undefined ? null : d.user_info;
    if (d.present) {
      remote.get(d.app).set(u, info);
      if (leaving.has(u)) {
        // Left through this app and present through another: moved, not gone.
        clearTimeout(leaving.get(u));
        leaving.delete(u);
      }
      if (!before) {
        put(u, info);
        emit('pusher:member_added', { id: u, info });
      } else if (!native.has(u)) {
        members().members[u] = info;
      }
    } else {
      remote.get(d.app).delete(u);
      if (before && !shown(u)) {
        drop(u);
        emit('pusher:member_removed', { id: u, info: had ? had.info : null });
      }
    }
  };
  const handler = (event, data, meta) => {
    if (event === 'pusher:subscription_succeeded') {
      sync();
      return emit(event, members(), meta);
    }
    if (event === BRIDGE_EVENT) return change(data);
    if (event === 'pusher:member_added' && data) {
      const u = String(data.id);
      const before = shown(u);
      native.set(u, data.info);
      if (leaving.has(u)) {
        clearTimeout(leaving.get(u));
        leaving.delete(u);
      }
      if (before) return; // listed already (through another app); pusher-js refreshed its info
      return emit(event, data, meta);
    }
    if (event === 'pusher:member_removed' && data) {
      const u = String(data.id);
      native.delete(u);
      const there = elsewhere(u);
      if (there) return put(u, there.info); // still present through another app
      if (bridged) {
        put(u, data.info);
        leaving.set(u, later(() => {
          leaving.delete(u);
          if (shown(u)) return;
          drop(u);
          emit('pusher:member_removed', data);
        }, LEAVE_GRACE_MS));
        return;
      }
      return emit(event, data, meta);
    }
    return emit(event, data, meta);
  };
  channel.__dualBridge = handler;
  channel.__dualBridgeSync = sync;
  channel.emit = handler;
}

/** Presence members as id → info (null for other channels). */
function membersOf(channel) {
  if (!channel.members || typeof channel.members.each !== 'function') return null;
  const out = new Map();
  channel.members.each((m) => out.set(String(m.id), m.info));
  return out;
}

/**
 * When the client's own instance re-subscribes after the switch, the channel
 * stayed subscribed as far as the app can tell: a second subscription_succeeded
 * is not told; on a presence channel the members that differ on the new app
 * are, as member_removed / member_added (nothing for members on both).
 */
function memberChanges(before, after, deliver) {
  if (!before || !after) return;
  for (const [id, info] of before) if (!after.has(id)) deliver('pusher:member_removed', { id, info });
  for (const [id, info] of after) if (!before.has(id)) deliver('pusher:member_added', { id, info });
}

/** A copy from a connection that is not the primary waits this long for the primary's. */
const HOLD_MS = 1000;

/**
 * Merges what several connections receive into one stream, each event once,
 * in the primary connection's order. Per fingerprint (the event and its data,
 * or `idOf(event, data)`), a copy is matched one-to-one with a copy from
 * another connection: an event published to both apps arrives once, one sent
 * twice on purpose arrives twice (with ids: once per id). A copy from a
 * connection that is not the primary is held until the primary delivers the
 * same event (then it is dropped), or until the primary delivers a later one
 * or HOLD_MS pass (then it is one the primary missed, and is delivered in its
 * place): the primary's order is kept.
 */
export class DedupFilter {
  constructor(idOf, { holdMs = HOLD_MS, trace } = {}) {
    this.trace = trace || null;
    this.idOf = idOf || null;
    this.holdMs = holdMs;
    this.primary = 'before';
    // The client's own instance on the new app ('after') may receive anything delivered before the switch too.
    this.sources = new Set(['before', 'second', 'after']);
    this.credit = new Map(); // source → key → copies still to come from it, already delivered
    this.held = []; // { source, key, deliver, at }, oldest first
    this.ids = new Set();
    this.timer = null;
    this.matched = false; // one event seen on two connections
    this.lastSeen = new Map(); // source → when it last delivered anything
  }

  /** The primary connection from now on, and the connections that may still send. */
  setPrimary(primary, sources) {
    this.primary = primary;
    this.sources = new Set(sources);
    const mine = this.held.filter((h) => h.source === primary);
    this.held = this.held.filter((h) => h.source !== primary);
    for (const h of mine) this.deliver(h);
  }

  /** Delivers whatever is still held (the overlap ends). */
  flush() {
    clearTimeout(this.timer);
    this.timer = null;
    const all = this.held;
    this.held = [];
    for (const h of all) this.deliver(h);
  }

  offer(source, event, data, deliver) {
    if (this.trace) this.trace(source, event, data, this.primary, this.held.length);
    this.lastSeen.set(source, Date.now());
    if (this.idOf) {
      const id = this.idOf(event, data);
      if (this.ids.has(id)) {
        this.matched = true;
        return;
      }
      this.ids.add(id);
      return deliver();
    }
    const key = `${event}\u0000${fingerprint(data)}`;
    const owed = this.creditOf(source);
    if ((owed.get(key) || 0) > 0) {
      owed.set(key, owed.get(key) - 1); // a copy of one delivered already
      this.matched = true;
      return;
    }
    const item = { source, key, deliver, at: Date.now() };
    if (source !== this.primary) {
      this.held.push(item);
      this.schedule();
      return;
    }
    const copy = this.held.findIndex((h) => h.key === key);
    if (copy >= 0) {
      // Held ones before it are events the primary missed: theirs is the place before this one.
      const missed = this.held.slice(0, copy);
      const matched = this.held[copy];
      this.matched = true;
      this.held = this.held.slice(copy + 1);
      for (const h of missed) this.deliver(h);
      this.deliver(item, matched.source);
      return;
    }
    this.deliver(item);
  }

  /** Delivers one; every connection that may still send a copy of it is owed that copy. */
  deliver(item, alsoFrom) {
    for (const s of this.sources) {
      if (s === item.source || s === alsoFrom) continue;
      if (s === this.primary && item.source !== this.primary) continue; // the primary has passed it
      const owed = this.creditOf(s);
      owed.set(item.key, (owed.get(item.key) || 0) + 1);
    }
    item.deliver();
  }

  creditOf(source) {
    if (!this.credit.has(source)) this.credit.set(source, new Map());
    return this.credit.get(source);
  }

  schedule() {
    if (this.timer || !this.held.length) return;
    const wait = Math.max(0, this.held[0].at + this.holdMs - Date.now());
    this.timer = later(() => {
      this.timer = null;
      const now = Date.now();
      while (this.held.length && this.held[0].at + this.holdMs <= now) this.deliver(this.held.shift());
      this.schedule();
    }, wait);
  }
}

function fingerprint(data) {
  if (typeof data === 'string') return `s${data}`;
  try {
    return `j${JSON.stringify(data)}`;
  } catch {
    return `o${String(data)}`;
  }
}

/**
 * Statuses worth another attempt: the service (or a proxy) overloaded or its host too
 * slow (429, 503, 504), or a proxy whose upstream went away mid-request (502: a replica
 * restarting). Signing is pure, so an authorization may always be asked again.
 */
const LOAD_STATUSES = new Set([429, 502, 503, 504]);

/**
 * A pusher-js `customHandler` for `channelAuthorization` (kind 'channel') or
 * `userAuthentication` (kind 'user') that retries what was refused for load
 * (429, 503, 504), lost by a proxy (502), timed out, or failed on the network, honouring Retry-After
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
    _onBridge, // connect()'s: the presence bridge's members in an authorization answer
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
          // A bridged presence channel's other-app members: for the helper, not pusher-js.
          if (data && typeof data === 'object' && 'presence_bridge' in data) {
            if (_onBridge && kind === 'channel') _onBridge(authParams.channelName, data.presence_bridge);
            delete data.presence_bridge;
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
