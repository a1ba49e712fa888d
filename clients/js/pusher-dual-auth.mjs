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
//
// With a service that has [recovery], nothing published through it is lost
// across a reconnect either: each channel gets what it missed, from the
// service's buffer, once and in order before newer live events, or is told
// that it could not (see recovery; recover() does the same for plain pusher-js).
//
// With a service that has [failover], a client whose app fails moves by itself:
// it cannot hear the announcement there, so it watches its own connection, and
// when that looks dead re-reads /client-config until it is told the healthy app;
// it moves make-before-break if its connection still works, else at once, each
// channel recovering what it missed (see failover).
//
// One file on purpose (copy it into your sources, or `npm pack`), in parts that
// read on their own, in this order:
//   connect       connect(): the instance, its options, the control channel
//   assignment    reading /client-config, announcements, re-reads, applying a change
//   handover      one move, make-before-break, in its phases
//   failover      the client's own connection watched; a plain move off a dead app (Watchdog, plainMove)
//   answer check  what the /client-config answer may set (checkAnswer)
//   presence      the other apps' members merged into a presence channel (bridgePresence)
//   merge         several connections' events as one stream (DedupFilter)
//   recovery      what a channel missed while away, from the service's buffer (Recovery, recover())
//   retry         authorizations refused for load, retried (retryingAuth)
//   plumbing      timers, waiting on pusher-js, intercepting a channel's emit

// ---------------------------------------------------------------------------
// Types (JSDoc; the public ones are in pusher-dual-auth.d.ts)
// ---------------------------------------------------------------------------

/** @typedef {import('./pusher-dual-auth').ConnectOptions} ConnectOptions */
/**
 * ConnectOptions, and the e2e suite's `_trace` (what a move's filter sees, for diagnosis only).
 * @typedef {ConnectOptions & { _trace?: (channel: string, ...seen: Parameters<Trace>) => void }} ConnectSettings
 */
/** @typedef {import('./pusher-dual-auth').RetryLimits} RetryLimits */
/** @typedef {Required<import('./pusher-dual-auth').FailoverLimits>} FailoverLimits */
/** @typedef {import('./pusher-dual-auth').RetryingAuthOptions} RetryingAuthOptions */
/** @typedef {import('./pusher-dual-auth').AuthRequestParams} AuthRequestParams */
/** @typedef {import('./pusher-dual-auth').AuthCallback} AuthCallback */
/** @typedef {import('./pusher-dual-auth').ClientConfig} Assignment  a /client-config answer, as checkAnswer passed it */
/** @typedef {ReturnType<typeof setTimeout>} Timer */
/** @typedef {(event: string, data?: unknown, meta?: unknown) => unknown} Emit */

/**
 * What the helper uses of a pusher-js connection (`pusher.connection`).
 * @typedef {object} Connection
 * @property {string} state
 * @property {string} [socket_id]
 * @property {(event: string, fn: Function) => void} bind
 * @property {(event: string, fn: Function) => void} unbind
 */

/**
 * pusher-js's presence members (`channel.members`).
 * @typedef {object} Members
 * @property {Record<string, unknown>} members  user id → info
 * @property {number} count
 * @property {(fn: (member: { id: string, info: unknown }) => void) => void} each
 */

/**
 * What the helper uses of a pusher-js channel. `__dualEmit` is what the channel emits
 * through when no move intercepts it: the helper's layers over pusher-js's own emit
 * (the presence merge, see bridgePresence). `__dualBridgeSync` is the presence merge's.
 * @typedef {object} Channel
 * @property {string} name
 * @property {boolean} subscribed
 * @property {boolean} subscriptionPending
 * @property {(event: string, fn: Function) => void} bind
 * @property {(event: string, fn: Function) => void} unbind
 * @property {Emit} emit
 * @property {Members} [members]
 * @property {Emit} [__dualEmit]
 * @property {(socketId: string, callback: AuthCallback) => void} [authorize]  pusher-js's (private channels call config.channelAuthorizer)
 * @property {(event: { event: string, channel: string, data: unknown }) => void} [handleEvent]  pusher-js's (decrypts, then emits)
 * @property {Track} [__dualRecovery]  recovery's state of the channel
 * @property {() => void} [__dualResync]  recovery's re-sync after a move
 * @property {() => void} [__dualRecover]  recovery's recovery after a re-subscription the app is not told of (a plain move)
 * @property {() => void} [__dualBridgeSync]
 * @property {boolean} [__dualShown]  the app has been told the channel is subscribed (see markShown)
 * @property {boolean} [__dualMoving]  a planned move's overlap filter has the channel (see interceptOwn)
 */

/**
 * What the helper uses of a pusher-js instance.
 * @typedef {object} PusherLike
 * @property {string} key
 * @property {Record<string, unknown>} options
 * @property {Connection} connection
 * @property {{ signin_requested: boolean }} user
 * @property {(name: string) => Channel} subscribe
 * @property {(name: string) => Channel} channel
 * @property {() => Channel[]} allChannels
 * @property {() => void} signin
 * @property {() => void} disconnect
 * @property {() => void} [connect]
 * @property {(event: string, data: unknown, channel?: string) => boolean} [send_event]
 * @property {(to: { appKey: string, cluster: string }) => void} [switchCluster]  pusher-js >= 8.4
 * @property {PusherConfig} [config]  pusher-js >= 8
 */

/**
 * pusher-js's `pusher.config` (>= 8), as far as recovery uses it: every channel authorizes through it.
 * @typedef {{ channelAuthorizer?: ((params: AuthRequestParams, callback: AuthCallback) => void) & { __dualTokens?: boolean } }} PusherConfig
 */
/** @typedef {new (key: string, options: object) => PusherLike} PusherClass  the pusher-js constructor */
/** @typedef {Record<string, unknown> & { customHandler?: Function }} AuthOptions  pusher-js's channelAuthorization / userAuthentication */
/** @typedef {Record<string, unknown> & { channelAuthorization?: AuthOptions, userAuthentication?: AuthOptions }} PusherOptions */

// ---------------------------------------------------------------------------
// connect
// ---------------------------------------------------------------------------

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
 * connect()'s settings with their defaults filled in (once, at connect()).
 * @typedef {object} Settings
 * @property {PusherOptions} options  the app's own pusher-js options
 * @property {ConnectOptions['onSwitch']} onSwitch
 * @property {ConnectOptions['onSwitchFailed']} onSwitchFailed
 * @property {ConnectOptions['onFailover']} onFailover
 * @property {FailoverLimits | false} failover  false: no watchdog
 * @property {ConnectOptions['eventId']} eventId
 * @property {typeof fetch} fetch
 * @property {() => number} random
 * @property {number} connectTimeoutMs
 * @property {number} handoverTimeoutMs
 * @property {RetryLimits | false} retry
 */

/**
 * One connect() call's state: what its parts (assignment, handover) share.
 * @typedef {object} Client
 * @property {PusherClass} Pusher
 * @property {ConnectSettings} settings  as the app passed them
 * @property {Settings} opts  with defaults
 * @property {() => Promise<Assignment>} read  reads /client-config and checks the answer
 * @property {PusherLike} pusher  the app's instance (null until created)
 * @property {Assignment} current  the assignment the instance authorizes for
 * @property {number} version  the last version announced (or read at connect)
 * @property {Timer | null} pending  the next re-read of the assignment
 * @property {Timer | null} again  the next try of a failed move
 * @property {boolean} moving  a move is under way
 * @property {boolean} recheckAfterMove  an assignment changed during the move: re-read when it ends
 * @property {Map<string, unknown>} bridgeSnapshots  presence channel → the other apps' members, as its authorization answered
 * @property {Recovery | null} recovery  null with `recovery: false`
 * @property {Watchdog | null} watchdog  null with `failover: false`
 * @property {Map<string, Map<string, unknown> | null>} membersAtDrop  channel → its members when the connection last left 'connected'
 */

/**
 * The /client-config answer is not trusted (a cache, a misrouted proxy or a
 * compromised config could answer): see checkAnswer for what it may set. An
 * answer it refuses rejects connect() (or, read later, leaves the client where
 * it is and is told to onSwitchFailed), and nothing is sent where it pointed.
 *
 * @template {PusherLike} P
 * @param {new (key: string, options: object) => P} Pusher  the pusher-js constructor
 * @param {ConnectSettings} settings
 * @returns {Promise<P>} the Pusher instance, once its first connection is established
 */
export async function connect(Pusher, settings) {
  const opts = settingsOf(settings);
  const base = typeof location !== 'undefined' ? location.href : undefined;
  const url = new URL(settings.configUrl, base);
  if (settings.uid !== undefined && settings.uid !== null) url.searchParams.set('uid', String(settings.uid));
  const trust = trustOf(settings, url);
  /** @type {Client} */
  const client = {
    Pusher, settings, opts, read: () => readAssignment(url, trust, opts), pusher: null, current: null,
    version: undefined, pending: null, again: null, moving: false, recheckAfterMove: false, bridgeSnapshots: new Map(),
    recovery: null, watchdog: null, membersAtDrop: new Map(),
  };
  client.current = await client.read();
  client.pusher = new Pusher(client.current.key, pusherOptions(client, client.current, () => client.current, () => client.pusher));
  client.recovery = recoveryOf(client, url);
  layerOnSubscribe(client);
  client.version = client.current.version;
  const control = client.pusher.subscribe(client.current.control_channel);
  control.bind('rollout-changed', (data) => onAnnouncement(client, data));
  try {
    await within(connected(client.pusher), opts.connectTimeoutMs, `connecting to ${client.current.app}`);
  } catch (e) {
    client.pusher.disconnect();
    throw e;
  }
  // Clients that missed an announcement (offline, reconnecting) re-read on reconnect. Bound
  // once the first connection is up, so every 'connected' from here on is a reconnect.
  client.pusher.connection.bind('connected', () => {
    if (!client.moving) recheck(client);
  });
  watchConnection(client);
  return /** @type {P} */ (client.pusher);
}

/**
 * @param {ConnectOptions} settings
 * @returns {Settings}
 */
function settingsOf(settings) {
  const {
    options = {}, onSwitch, onSwitchFailed, onFailover, eventId,
    fetch: fetchImpl = globalThis.fetch, random = Math.random,
    connectTimeoutMs = 20000, handoverTimeoutMs = HANDOVER_TIMEOUT_MS,
  } = settings;
  const retry = settings.retry === undefined ? {} : settings.retry;
  const failover = settings.failover === false ? false : { ...FAILOVER_LIMITS, ...(settings.failover || {}) };
  return {
    options, onSwitch, onSwitchFailed, onFailover, failover, eventId, fetch: fetchImpl, random, connectTimeoutMs, handoverTimeoutMs, retry,
  };
}

/**
 * The pusher-js options of an instance on `cfg`. Only the cluster, client_options
 * and the two endpoints come from the service; everything else is the app's own
 * options and survives switches.
 *
 * @param {Client} client
 * @param {Assignment} cfg
 * @param {() => Assignment} cfgOf  the assignment whose endpoints the instance authorizes at (read at each retry)
 * @param {() => PusherLike | null} instance  the instance (a retry for a socket it no longer has is dropped)
 * @returns {Record<string, unknown>}
 */
function pusherOptions(client, cfg, cfgOf, instance) {
  const { options } = client.opts;
  return {
    ...options,
    ...cfg.client_options,
    cluster: cfg.cluster,
    // The endpoints are checkAnswer's: absolute, on configUrl's origin or one in allowedOrigins.
    channelAuthorization: {
      ...(options.channelAuthorization || {}),
      endpoint: cfg.channelAuthorization.endpoint,
      ...retrying(client, 'channel', options.channelAuthorization, () => cfgOf().channelAuthorization.endpoint, instance),
    },
    userAuthentication: {
      ...(options.userAuthentication || {}),
      endpoint: cfg.userAuthentication.endpoint,
      ...retrying(client, 'user', options.userAuthentication, () => cfgOf().userAuthentication.endpoint, instance),
    },
  };
}

/**
 * Authorizations go through a retrying handler (unless the app brought its own,
 * or retry: false): refusals for load are retried at `endpoint()` at each attempt.
 * The handler also hands the presence bridge's members of an answer to bridgeSnapshots.
 *
 * @param {Client} client
 * @param {'channel' | 'user'} kind
 * @param {AuthOptions | undefined} own  the app's own options for this kind
 * @param {() => string} endpoint
 * @param {() => PusherLike | null} instance
 * @returns {{ customHandler?: ReturnType<typeof retryingAuth> }}
 */
function retrying(client, kind, own, endpoint, instance) {
  const { retry, fetch: fetchImpl, random } = client.opts;
  if (retry === false || (own && own.customHandler)) return {};
  /** @param {string} socketId */
  const isCurrent = (socketId) =>
    !instance() || !instance().connection.socket_id || instance().connection.socket_id === socketId;
  /** @param {string} channelName @param {unknown} members */
  const _onBridge = (channelName, members) => client.bridgeSnapshots.set(channelName, members);
  return { customHandler: retryingAuth({ ...(own || {}), ...retry, kind, endpoint, fetch: fetchImpl, random, isCurrent, _onBridge }) };
}

/**
 * What the helper layers over each channel the app subscribes to (laravel-echo
 * subscribes through here too): presence channels merge the members the service
 * bridges from the other apps; every channel but the control channel is recovered
 * after a reconnect (see recovery), over the presence merge; on top, a mark once
 * the app was told it is subscribed (a plain move does not tell it again).
 * @param {Client} client
 */
function layerOnSubscribe(client) {
  const { pusher } = client;
  const subscribeHere = pusher.subscribe.bind(pusher);
  pusher.subscribe = (name) => {
    const channel = subscribeHere(name);
    if (String(name).startsWith('presence-') && !channel.__dualBridgeSync) {
      bridgePresence(channel, () => client.current.app, client.bridgeSnapshots);
    }
    if (client.recovery) client.recovery.attach(channel);
    markShown(channel);
    return channel;
  };
}

/**
 * Recovery for the client's instance (null with `recovery: false`): on once an
 * authorization answer carries a token (a service with [recovery]), at
 * POST /recover/{app} beside the channel authorization endpoint of the app the
 * client is on (or recoverEndpoint, resolved against configUrl).
 * @param {Client} client
 * @param {URL} configUrl
 * @returns {Recovery | null}
 */
function recoveryOf(client, configUrl) {
  const { settings, opts } = client;
  if (settings.recovery === false) return null;
  const own = settings.recoverEndpoint;
  /** @type {[string | null, string | null]} */
  let memo = [null, null]; // asked for once per endpoint, not once per event
  const endpoint = () => {
    const app = client.current.app;
    const given = typeof own === 'function' ? own(app) : own;
    const from = typeof given === 'string' ? given : client.current.channelAuthorization.endpoint;
    if (memo[0] !== from) {
      let to = null;
      try {
        // Both against configUrl, as the authorization endpoints are: in a page, a
        // relative one must not resolve against the page's own origin.
        if (typeof given === 'string') to = new URL(given, configUrl).href;
        else if (typeof from === 'string') to = recoverUrlOf(new URL(from, configUrl).href);
      } catch {
        // not a URL: no recovery
      }
      memo = [from, to];
    }
    return memo[1];
  };
  const skip = (/** @type {string} */ name) => name === client.current.control_channel;
  return new Recovery(client.pusher, recoverySettingsOf({ ...(settings.recovery || {}), fetch: opts.fetch, random: opts.random }, { endpoint, skip, always: false }));
}

// ---------------------------------------------------------------------------
// assignment: which app the client belongs on, and when that changes
// ---------------------------------------------------------------------------

/**
 * GET /client-config, checked (see checkAnswer).
 * @param {URL} url  configUrl, with uid
 * @param {Trust} trust
 * @param {Settings} opts
 * @returns {Promise<Assignment>}
 */
async function readAssignment(url, trust, opts) {
  const { fetch: fetchImpl, options } = opts;
  const res = await fetchImpl(url.toString(), { credentials: 'include', cache: 'no-store' });
  if (!res.ok) throw new Error(`client-config: HTTP ${res.status} from ${url}`);
  const cfg = await res.json().catch(() => null);
  const ok = cfg && typeof cfg.app === 'string' && typeof cfg.key === 'string' &&
    cfg.channelAuthorization && typeof cfg.channelAuthorization.endpoint === 'string' &&
    cfg.userAuthentication && typeof cfg.userAuthentication.endpoint === 'string';
  if (!ok) throw new Error(`client-config: not a client-config answer from ${url}`);
  return checkAnswer(cfg, url, trust, options);
}

/**
 * A `rollout-changed` announcement on the control channel: re-read the
 * assignment at a random moment within the announced spread. Replicas
 * announce a change once each: a version already seen is ignored.
 *
 * @param {Client} client
 * @param {unknown} data  `{ version, spread_secs }`, or its JSON
 */
function onAnnouncement(client, data) {
  /** @type {{ version?: number, spread_secs?: number }} */
  let event = /** @type {object} */ (data);
  if (typeof data === 'string') {
    try {
      event = JSON.parse(data);
    } catch {
      return; // not an announcement of ours
    }
  }
  if (!event || typeof event !== 'object' || event.version === client.version) return;
  client.version = event.version;
  clearTimeout(client.pending);
  const spreadMs = Math.max(0, Number(event.spread_secs) || 0) * 1000;
  const wanted = event.version;
  const { random } = client.opts;
  client.pending = later(() => recheck(client, 0, wanted), Math.floor(random() * spreadMs));
}

/**
 * Reads the assignment and applies it. An announcement (or reconnect) whose
 * assignment cannot be read — a replica restarting, a proxy's 502 — or is read
 * from a replica that has not loaded the announced change yet (replicas reload a
 * moment apart; `wanted` is the announced version) is read again a few times,
 * spread: else the client would stay behind for the rest of the step. A newer
 * announcement replaces the retry. An answer refused by checkAnswer is read again
 * the same way (a cache or proxy may recover); if the last read is still refused,
 * the client stays and onSwitchFailed is told why.
 *
 * @param {Client} client
 * @param {number} [attempt]
 * @param {number} [wanted]
 */
async function recheck(client, attempt = 0, wanted = undefined) {
  let next = null;
  let refusal = null;
  try {
    next = await client.read();
  } catch (e) {
    if (e instanceof RefusedAnswer) refusal = e; // else: read again below
  }
  const last = attempt + 1 >= RECHECK_ATTEMPTS;
  if (!next || (wanted !== undefined && next.version !== wanted && !last)) {
    const { random, onSwitchFailed } = client.opts;
    if (!last) {
      clearTimeout(client.pending);
      const delay = Math.min(RECHECK_MAX_MS, RECHECK_FIRST_MS * 2 ** attempt);
      client.pending = later(() => recheck(client, attempt + 1, wanted), Math.floor(delay * (0.5 + random())));
    } else if (refusal && onSwitchFailed) {
      onSwitchFailed(client.current.app, refusal.app, refusal);
    }
    return;
  }
  await apply(client, next);
}

/**
 * Moves the client to `next` if it names another app, else takes it as the
 * current assignment. The move is make-before-break (a handover) while the
 * client's own connection works, else a plain move (see failover). A failover,
 * or the end of one, is told to onFailover, any other move to onSwitch. One move
 * at a time: a change during a move is re-read when it ends.
 *
 * @param {Client} client
 * @param {Assignment} next
 */
async function apply(client, next) {
  if (next.app === client.current.app && next.key === client.current.key) {
    client.current = next;
    client.version = next.version;
    return;
  }
  if (client.moving) {
    client.recheckAfterMove = true; // the move under way re-checks when it ends
    return;
  }
  const { onSwitch, onSwitchFailed, onFailover } = client.opts;
  const from = client.current.app;
  const reason = failoverReason(client.current, next);
  if (typeof client.pusher.switchCluster !== 'function') {
    // pusher-js < 8.4: the client stays where it is; the assignment applies at the next page load.
    if (onSwitchFailed) onSwitchFailed(from, next.app, new Error('pusher-js without switchCluster (< 8.4): applies at the next page load'));
    return;
  }
  const works = connectionWorks(client);
  client.moving = true;
  if (client.watchdog) client.watchdog.calm(); // not during the move: its re-reads stop, a read under way is dropped
  try {
    if (works) await handover(client, next);
    else await plainMove(client, next);
    // The version of the assignment it now holds: a client moved by its watchdog never
    // heard the announcement of the failover, and must not take the one that ends it
    // (the rollout's version again) for one already seen.
    client.version = next.version;
    if (reason === null) {
      if (onSwitch) onSwitch(from, next.app);
    } else if (onFailover) {
      onFailover(from, next.app, reason);
    }
  } catch (e) {
    moveFailed(client, from, next.app, e);
  } finally {
    client.moving = false;
    if (client.watchdog) client.watchdog.reset(); // watched afresh on the app it is on now
    if (client.recheckAfterMove) {
      client.recheckAfterMove = false;
      recheck(client);
    }
  }
}

/**
 * A move that failed: the client stays, the app is told, and the move is tried
 * again after RETRY_MOVE_MS (plus up to as much again, spread).
 *
 * @param {Client} client
 * @param {string} from
 * @param {string} to
 * @param {Error} error
 */
function moveFailed(client, from, to, error) {
  const { onSwitchFailed, random } = client.opts;
  if (onSwitchFailed) onSwitchFailed(from, to, error);
  clearTimeout(client.again);
  client.again = later(() => recheck(client), RETRY_MOVE_MS + Math.floor(random() * RETRY_MOVE_MS));
}

// ---------------------------------------------------------------------------
// handover: one move, make-before-break (see the top of this file)
// ---------------------------------------------------------------------------

/**
 * One channel during a move.
 * @typedef {object} Overlap
 * @property {string} name
 * @property {Channel} main  the client's own channel object (the app's)
 * @property {DedupFilter} filter  what the connections deliver into `main`, merged
 * @property {Emit} [deliver]  `main`'s emit when nothing intercepts it
 * @property {Promise<void>} resubscribed  settled when `main` is subscribed again after the switch
 * @property {() => void} resolve
 * @property {(error: Error) => void} reject
 * @property {Map<string, unknown> | null} [membersBefore]  a presence channel's members at the switch
 */

/**
 * One move under way.
 * @typedef {object} Move
 * @property {Assignment} next  the target
 * @property {PusherLike} shadow  the second connection, on the target app
 * @property {Overlap[]} overlap  one per channel the client holds
 * @property {Array<() => void>} undo  the second connection's interceptors
 * @property {Array<() => void>} undoMine  the client's own channels' interceptors
 * @property {boolean} switched  the client's own instance has switched to the target
 * @property {string | undefined} oldSocket  its socket id before the switch
 */

/**
 * Moves the client's own instance to `next`: a second connection subscribes to
 * every channel there first; the instance switches only once all of that
 * succeeded and the old connection has delivered what was on its way. Rejects
 * (the client stays where it is) if a phase fails or takes longer than
 * handoverTimeoutMs.
 *
 * @param {Client} client
 * @param {Assignment} next
 */
async function handover(client, next) {
  const timeoutMs = client.opts.handoverTimeoutMs;
  const move = startMove(client, next);
  try {
    await within(connected(move.shadow), timeoutMs, `connecting to ${next.app}`);
    await Promise.all(overlapChannels(client, move));
    await settle(move.overlap);
    switchOver(client, move);
    await within(Promise.all(move.overlap.map((o) => o.resubscribed)), timeoutMs, `re-subscribing on ${next.app}`);
    await sleep(HANDOVER_GRACE_MS);
  } finally {
    endMove(move);
  }
}

/**
 * The second connection (to the target) and an Overlap per channel the client
 * holds (subscribed or subscribing).
 *
 * @param {Client} client
 * @param {Assignment} next
 * @returns {Move}
 */
function startMove(client, next) {
  const { pusher, Pusher, settings } = client;
  const { eventId } = client.opts;
  const names = pusher.allChannels().filter((c) => c.subscribed || c.subscriptionPending).map((c) => c.name);
  /** @type {Move} */
  const move = { next, shadow: null, overlap: [], undo: [], undoMine: [], switched: false, oldSocket: undefined };
  move.shadow = new Pusher(next.key, pusherOptions(client, next, () => next, () => move.shadow));
  move.overlap = names.map((name) => {
    const trace = settings._trace && /** @type {Trace} */ ((...a) => settings._trace(name, ...a)); // for the suite's diagnosis only
    const o = /** @type {Overlap} */ ({ name, main: pusher.channel(name), filter: new DedupFilter(eventId && ((e, d) => eventId(name, e, d)), { trace }) });
    // Settled by the interceptor when the client's own channel is subscribed again after the switch.
    o.resubscribed = new Promise((resolve, reject) => Object.assign(o, { resolve, reject }));
    o.resubscribed.catch(() => {});
    return o;
  });
  return move;
}

/**
 * Routes every channel's events on both connections through its filter, and
 * subscribes the second connection to it (signing in too, if the client had).
 *
 * @param {Client} client
 * @param {Move} move
 * @returns {Promise<void>[]} each subscription (and the signin), within handoverTimeoutMs
 */
function overlapChannels(client, move) {
  const timeoutMs = client.opts.handoverTimeoutMs;
  const subscribed = move.overlap.map((o) => {
    interceptOwn(client, move, o);
    const copy = interceptSecond(move, o);
    return within(subscription(copy), timeoutMs, `subscribing to ${o.name} on ${move.next.app}`);
  });
  if (client.pusher.user && client.pusher.user.signin_requested) {
    move.shadow.signin();
    subscribed.push(within(signedIn(move.shadow), timeoutMs, `signing in on ${move.next.app}`));
  }
  return subscribed;
}

/**
 * The client's own channel during the move: its events go through the filter,
 * as 'before' (its old connection) or 'after' (its connection on the target,
 * once switched). After the switch its second subscription_succeeded settles
 * `o.resubscribed` instead of reaching the app.
 *
 * @param {Client} client
 * @param {Move} move
 * @param {Overlap} o
 */
function interceptOwn(client, move, o) {
  const { pusher } = client;
  const { name, main, filter } = o;
  const deliver = originalEmit(main);
  o.deliver = deliver;
  // Which of the client's own connections an event came on: messages already queued on
  // the old socket are still dispatched after switchCluster, so it is the socket id that says.
  const mine = () =>
    move.switched && pusher.connection.state === 'connected' && pusher.connection.socket_id !== move.oldSocket ? 'after' : 'before';
  main.__dualMoving = true; // the filter orders what comes early on the target: recovery does not hold it
  move.undoMine.push(() => delete main.__dualMoving);
  move.undoMine.push(intercept(main, (event, data, meta) => {
    // After the switch the client's own instance is another connection (on the target app):
    // an event can reach it there again, so it counts as a source of its own.
    if (!event.startsWith('pusher:')) return filter.offer(mine(), event, data, () => deliver(event, data, meta));
    if (!move.switched) return deliver(event, data, meta);
    if (event === 'pusher:subscription_succeeded') {
      if (main.__dualBridgeSync) main.__dualBridgeSync(); // the other apps' members, as the new app's authorization said
      memberChanges(o.membersBefore, membersOf(main), rawEmit(main));
      return o.resolve();
    }
    if (event === 'pusher:subscription_error') o.reject(new Error(`re-subscribing ${name}: ${JSON.stringify(data)}`));
    return deliver(event, data, meta);
  }));
}

/**
 * The second connection's copy of the channel: its events go through the
 * filter as 'second', into the client's own channel object; its own state
 * (pusher: events) stays its own.
 *
 * @param {Move} move
 * @param {Overlap} o
 * @returns {Channel} the copy
 */
function interceptSecond(move, o) {
  const copy = move.shadow.subscribe(o.name);
  const own = originalEmit(copy);
  move.undo.push(intercept(copy, (event, data, meta) => {
    if (event.startsWith('pusher:')) return own(event, data, meta); // the copy's own state, not the app's
    o.filter.offer('second', event, data, () => o.deliver(event, data, meta));
  }));
  return copy;
}

/**
 * Events still in flight to the old connection would be lost with it: waits until
 * the streams overlap (or the old one is quiet) on every channel, at most
 * SETTLE_MAX_MS. Quiet since the interception began, not since ever: an event
 * published just before may still be on its way to the old connection (and not
 * to the new one).
 *
 * @param {Overlap[]} overlap
 */
async function settle(overlap) {
  const settleFrom = Date.now();
  const settleBy = settleFrom + SETTLE_MAX_MS;
  /** @param {DedupFilter} f */
  const quiet = (f) => Date.now() - Math.max(f.lastSeen.get('before') || 0, settleFrom) >= SETTLE_QUIET_MS;
  while (!overlap.every((o) => o.filter.matched || quiet(o.filter)) && Date.now() < settleBy) await sleep(25);
}

/**
 * Every channel is live on the target: the client's own instance moves now
 * (its options first, so it authorizes at the target's endpoints). Once it is
 * connected to the new app, its old connection has delivered all it will: the
 * second connection is the primary from then on.
 *
 * @param {Client} client
 * @param {Move} move
 */
function switchOver(client, move) {
  const { pusher } = client;
  const { next, overlap } = move;
  for (const o of overlap) o.membersBefore = membersOf(o.main);
  move.oldSocket = pusher.connection.socket_id;
  const primaryNow = () => {
    if (pusher.connection.socket_id === move.oldSocket) return;
    pusher.connection.unbind('connected', primaryNow);
    for (const o of overlap) o.filter.setPrimary('second', ['second', 'after']);
  };
  pusher.connection.bind('connected', primaryNow);
  move.undoMine.push(() => pusher.connection.unbind('connected', primaryNow));
  move.switched = true;
  switchTo(client, next);
}

/**
 * The client's own instance switches to `next`: its options first (it authorizes
 * at the target's endpoints), then switchCluster, which reconnects from any state.
 *
 * @param {Client} client
 * @param {Assignment} next
 */
function switchTo(client, next) {
  const { pusher } = client;
  client.current = next;
  pusher.options = { ...pusher.options, ...pusherOptions(client, next, () => client.current, () => pusher) };
  pusher.switchCluster({ appKey: next.key, cluster: next.cluster });
}

/**
 * The move is over (done or failed): the second connection goes; the client's
 * own channels keep their filter TAIL_MS longer after a switch (its connection
 * on the new app may still bring copies of what the second one delivered).
 *
 * @param {Move} move
 */
function endMove(move) {
  for (const u of move.undo.reverse()) u();
  move.shadow.disconnect();
  const end = () => {
    for (const u of move.undoMine.reverse()) u();
    for (const o of move.overlap) o.filter.flush();
    // Recovery re-syncs on the new socket (the channel stayed live: no hold, no gap told).
    for (const o of move.overlap) if (o.main.__dualResync) o.main.__dualResync();
  };
  if (!move.switched) {
    end();
  } else {
    for (const o of move.overlap) o.filter.setPrimary('after', ['after']);
    later(end, TAIL_MS);
  }
}

// ---------------------------------------------------------------------------
// failover: the client's own connection watched, and a plain move off a dead app
//
// With [failover], /client-config names the healthy app to every client while one has
// failed (`failover: { from, to, since_ms, reason }`), and both control channels
// announce it: a client on the failed app may never hear that. So the Watchdog watches
// the client's own connection: not 'connected' for afterMs, or connected but silent
// for silentMs and then no message (not even pusher:pong) within pongMs of the
// helper's own pusher:ping. Suspected, it re-reads /client-config (the first read
// within REREAD_FIRST_MS at random, then REREAD_NEXT_MS × REREAD_FACTOR per read, at
// most REREAD_MAX_MS, each ±50 %: a fleet that lost its app does not read at once)
// until the connection is healthy again or the answer names another app, and then
// applies it (apply). A move whose connection works is make-before-break (handover);
// one off a dead or black-holed connection is a plain move (plainMove): the instance
// switches at once, each channel re-subscribes there without the app being told again
// (members that differ are), and recovery delivers what it missed.
// ---------------------------------------------------------------------------

/** connect()'s `failover` defaults. */
const FAILOVER_LIMITS = { afterMs: 3000, silentMs: 10000, pongMs: 5000 };
/** A suspected connection's re-reads of the assignment (see above). */
const REREAD_FIRST_MS = 1000;
const REREAD_NEXT_MS = 2000;
const REREAD_FACTOR = 1.5;
const REREAD_MAX_MS = 30000;

/**
 * What onFailover is told for a move from `current` to `next` (another app): the
 * answer's failover reason, 'return' when a failover ended, or null (an ordinary
 * rollout move, told to onSwitch).
 * @param {Assignment} current
 * @param {Assignment} next
 * @returns {string | null}
 */
function failoverReason(current, next) {
  if (next.failover) return next.failover.reason;
  if (current.failover) return 'return';
  return null;
}

/**
 * Whether the client's own connection works: connected and not suspected. Only
 * then can a move be make-before-break (the old connection delivers until the switch).
 * @param {Client} client
 */
function connectionWorks(client) {
  return client.pusher.connection.state === 'connected' && !(client.watchdog && client.watchdog.suspected);
}

/**
 * Set up at connect(), once the first connection is up: each presence channel's
 * members as the app last saw them, kept when the connection leaves 'connected'
 * (pusher-js empties them then; a plain move tells the app what differs from
 * these); the Watchdog, unless `failover: false`; and the app's own disconnect()
 * stops it (connect() starts it again): the app closed the connection, the helper
 * does not fight that.
 * @param {Client} client
 */
function watchConnection(client) {
  const { pusher } = client;
  // 'state_change' comes before the state's own event, to which pusher-js binds its reset.
  pusher.connection.bind('state_change', (/** @type {{ previous?: string, current?: string }} */ change) => {
    if (!change || change.previous !== 'connected' || change.current === 'connected') return;
    client.membersAtDrop = new Map(pusher.allChannels().map((c) => [c.name, membersOf(c)]));
  });
  if (client.opts.failover === false) return;
  const watchdog = new Watchdog(client, client.opts.failover);
  client.watchdog = watchdog;
  const disconnectHere = pusher.disconnect.bind(pusher);
  pusher.disconnect = () => {
    watchdog.stop();
    disconnectHere();
  };
  if (typeof pusher.connect === 'function') {
    const connectHere = pusher.connect.bind(pusher);
    pusher.connect = () => {
      connectHere();
      watchdog.start();
    };
  }
}

/**
 * Watches the client's own connection (see above): one check timer (down, silent,
 * or waiting for the pong), and while suspected one re-read loop. Paused while a
 * move is under way (apply() resets it after); stopped while the app has disconnected.
 */
class Watchdog {
  /**
   * @param {Client} client
   * @param {FailoverLimits} limits
   */
  constructor(client, limits) {
    this.client = client;
    this.limits = limits;
    this.suspected = false;
    this.stopped = false;
    /** Messages received, and when the last one came ('connected' counts as one). */
    this.messages = 0;
    this.heard = Date.now();
    /** Since when the connection has not been 'connected' (null: it is). */
    this.downSince = /** @type {number | null} */ (null);
    /** The message count when the helper pinged (null: no ping waiting for an answer), and when. */
    this.pinged = /** @type {number | null} */ (null);
    this.pingAt = 0;
    /** @type {Timer | null} */
    this.timer = null;
    /** @type {Timer | null} the next re-read */
    this.reread = null;
    /** Re-reads since the suspicion; the loop's generation (a read from an older loop is dropped). */
    this.reads = 0;
    this.gen = 0;
    const { connection } = client.pusher;
    connection.bind('state_change', (/** @type {{ current?: string }} */ change) => this.changed(change && change.current));
    connection.bind('message', () => this.message());
    this.reset();
  }

  /** The app connected again after its disconnect(): watched afresh. */
  start() {
    this.stopped = false;
    this.reset();
  }

  /** The app disconnected: nothing is watched until it connects again. */
  stop() {
    this.stopped = true;
    this.calm();
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** Watched afresh from now, as the connection is (after a move, or start()). */
  reset() {
    if (this.stopped) return;
    this.calm();
    const up = this.client.pusher.connection.state === 'connected';
    this.downSince = up ? null : Date.now();
    this.heard = Date.now();
    this.pinged = null;
    this.arm(up ? this.limits.silentMs : this.limits.afterMs);
  }

  /** @param {string | undefined} state */
  changed(state) {
    if (this.stopped) return;
    if (state === 'connected') {
      this.downSince = null;
      this.heard = Date.now();
      this.pinged = null;
      if (this.suspected) this.calm();
      return this.arm(this.limits.silentMs);
    }
    if (this.downSince !== null) return; // connecting → unavailable → connecting: down since the first
    this.downSince = Date.now();
    this.pinged = null;
    if (!this.suspected) this.arm(this.limits.afterMs);
  }

  message() {
    this.messages++;
    this.heard = Date.now();
    if (this.suspected && !this.stopped && this.client.pusher.connection.state === 'connected') {
      this.calm();
      this.arm(this.limits.silentMs);
    }
  }

  /** @param {number} ms */
  arm(ms) {
    clearTimeout(this.timer);
    this.timer = later(() => this.check(), Math.max(0, ms));
  }

  check() {
    this.timer = null;
    if (this.stopped || this.suspected) return;
    const { afterMs, silentMs, pongMs } = this.limits;
    if (this.client.moving) return this.arm(afterMs); // a move reconnects on purpose: apply() resets after it
    const now = Date.now();
    if (this.client.pusher.connection.state !== 'connected') {
      if (this.downSince === null) this.downSince = now;
      const left = this.downSince + afterMs - now;
      return left > 0 ? this.arm(left) : this.suspect();
    }
    if (this.pinged !== null) {
      if (this.messages > this.pinged) {
        this.pinged = null; // answered (or anything else came): alive
      } else {
        const left = this.pingAt + pongMs - now;
        return left > 0 ? this.arm(left) : this.suspect();
      }
    }
    const quiet = now - this.heard;
    if (quiet < silentMs) return this.arm(silentMs - quiet);
    // Silent: a healthy connection answers a ping, even with nothing to deliver.
    this.pinged = this.messages;
    this.pingAt = now;
    const { pusher } = this.client;
    if (typeof pusher.send_event === 'function') pusher.send_event('pusher:ping', {});
    this.arm(pongMs);
  }

  /**
   * The connection is suspected: the re-read loop starts (one at a time). Only with a
   * service that has [failover] (its answers carry `failover`): else a re-read could
   * not move the client, and a fleet of dropped clients would only load the service.
   */
  suspect() {
    if (this.suspected || !('failover' in this.client.current)) return;
    this.suspected = true;
    this.reads = 0;
    this.schedule();
  }

  /** Not (or no longer) suspected: the loop stops; a read under way is dropped. */
  calm() {
    this.suspected = false;
    this.gen++;
    clearTimeout(this.reread);
    this.reread = null;
  }

  schedule() {
    const { random } = this.client.opts;
    const n = this.reads;
    const delay = n === 0
      ? random() * REREAD_FIRST_MS
      : Math.min(REREAD_MAX_MS, REREAD_NEXT_MS * REREAD_FACTOR ** (n - 1)) * (0.5 + random());
    const gen = this.gen;
    clearTimeout(this.reread);
    this.reread = later(() => this.read(gen), Math.floor(delay));
  }

  /**
   * One re-read: another app → apply() (which resets the watchdog after the move);
   * the same app → read again later; not read (an error, or refused by checkAnswer)
   * counts as the same.
   * @param {number} gen
   */
  async read(gen) {
    this.reread = null;
    if (gen !== this.gen) return;
    this.reads++;
    /** @type {Assignment | null} */
    let next = null;
    try {
      next = await this.client.read();
    } catch {
      // not read: backs off as for the same app
    }
    if (gen !== this.gen) return; // healthy again (or reset) meanwhile
    const { current } = this.client;
    if (next && (next.app !== current.app || next.key !== current.key)) {
      apply(this.client, next);
      return;
    }
    if (next) this.client.current = next;
    this.schedule();
  }
}

/**
 * The app's channel: marked once the app has been told it is subscribed, so a
 * plain move swallows its re-subscription (and only then). Over the helper's other layers.
 * @param {Channel} channel
 */
function markShown(channel) {
  if (channel.__dualShown !== undefined) return;
  channel.__dualShown = false;
  const below = originalEmit(channel);
  /** @type {Emit} */
  const handler = (event, data, meta) => {
    if (event === 'pusher:subscription_succeeded') channel.__dualShown = true;
    return below(event, data, meta);
  };
  channel.__dualEmit = handler;
  channel.emit = handler;
}

/**
 * A move off a connection that does not work (dead, or connected and black-holed):
 * the instance switches to `next` at once. Each channel the app was told is
 * subscribed re-subscribes there unseen: no second subscription_succeeded, but the
 * presence merge re-synced and the members that differ told, and recovery asked
 * for what it missed (holding live events until then); a refusal is let through.
 * Resolves once every channel is settled there, or after handoverTimeoutMs (the
 * instance keeps connecting there: the move is made either way).
 *
 * @param {Client} client
 * @param {Assignment} next
 */
async function plainMove(client, next) {
  const { pusher } = client;
  // Connected but silent: pusher-js still lists the members the app saw; else they were kept at the drop.
  const up = pusher.connection.state === 'connected';
  const rejoined = pusher.allChannels().filter((c) => c.__dualShown).map((channel) => {
    const before = up || !client.membersAtDrop.has(channel.name) ? membersOf(channel) : client.membersAtDrop.get(channel.name);
    return rejoin(channel, before);
  });
  switchTo(client, next);
  const timeoutMs = client.opts.handoverTimeoutMs;
  await within(Promise.all(rejoined), timeoutMs, `re-subscribing on ${next.app}`).catch(() => {});
}

/**
 * The channel's next subscription (on the new app) is not told to the app: see plainMove.
 * @param {Channel} channel
 * @param {Map<string, unknown> | null} before  its presence members as the app saw them
 * @returns {Promise<void>}  settled on its subscription_succeeded or subscription_error
 */
function rejoin(channel, before) {
  return new Promise((resolve) => {
    const deliver = originalEmit(channel);
    const undo = intercept(channel, (event, data, meta) => {
      if (event === 'pusher:subscription_succeeded') {
        undo();
        if (channel.__dualBridgeSync) channel.__dualBridgeSync(); // the other apps' members, as the new app's authorization said
        memberChanges(before, membersOf(channel), rawEmit(channel));
        if (channel.__dualRecover) channel.__dualRecover(); // what it missed, before what comes live from here
        return resolve();
      }
      if (event === 'pusher:subscription_error') {
        undo();
        resolve();
      }
      return deliver(event, data, meta);
    });
  });
}

// ---------------------------------------------------------------------------
// answer check: what the /client-config answer may set. The service never sends anything
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
// - failover must be null or { from, to, reason } with strings: reason is told to onFailover.
// - client_options may set only the pusher-js options below. Where the
//   connection goes (HOST_OPTIONS, PORT_OPTIONS, PATH_OPTIONS) needs the app's
//   allowedHosts; forceTLS: false needs allowNoTLS: true; turning stats on and
//   anything about authorization are the app's own options' to set. A value
//   equal to one the app passes in its own options is taken as it changes nothing.
// ---------------------------------------------------------------------------

/** An answer checkAnswer refused; `app` is the app it named (for onSwitchFailed). */
class RefusedAnswer extends Error {
  /**
   * @param {string} message
   * @param {string} app
   */
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

/**
 * A host name or IP address, nothing else (no scheme, port, path, userinfo or space): its normal form, else null.
 * @param {unknown} value
 * @returns {string | null}
 */
function hostName(value) {
  if (typeof value !== 'string' || value.length > 253 || !(HOST_NAME.test(value) || IPV6_HOST.test(value))) return null;
  try {
    const u = new URL(`http://${value}/`);
    return u.host === u.hostname ? u.hostname : null;
  } catch {
    return null;
  }
}

/** @param {unknown} v */
const isPort = (v) => {
  const n = typeof v === 'string' && /^[0-9]{1,5}$/.test(v) ? Number(v) : v;
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
};
/**
 * A path pusher-js puts right after host:port: empty, or "/…" of URL path characters (no ? # \ or space).
 * @param {unknown} v
 */
const isPath = (v) => typeof v === 'string' && /^(?:\/[A-Za-z0-9\-._~!$&'()*+,;=:@%]*)*$/.test(v);

/**
 * A value for a message: JSON (quotes strings, escapes control characters), cut short.
 * @param {unknown} value
 * @returns {string}
 */
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

/**
 * What the app allows beyond configUrl's origin.
 * @typedef {object} Trust
 * @property {string} configOrigin
 * @property {Set<string>} origins  where the auth endpoints may be: configUrl's origin and allowedOrigins
 * @property {Set<string>} hosts  allowedHosts, normalized
 * @property {boolean} noTLS  allowNoTLS
 */

/**
 * The app's allowances (allowedOrigins, allowedHosts, allowNoTLS), checked: a mistake there is the app's, told at once.
 * @param {ConnectOptions} settings
 * @param {URL} configUrl
 * @returns {Trust}
 */
function trustOf(settings, configUrl) {
  /** @param {'allowedOrigins' | 'allowedHosts'} name @returns {unknown[]} */
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
      u.pathname === '/' && !u.search && !u.hash && !String(entry).endsWith('?') && !String(entry).endsWith('#');
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

/**
 * Why `raw` (an auth endpoint from the answer) is refused, or its absolute URL.
 * @param {string} field
 * @param {string} raw
 * @param {URL} configUrl
 * @param {Trust} trust
 * @returns {{ problem: string, url?: undefined } | { url: string, problem?: undefined }}
 */
function checkEndpoint(field, raw, configUrl, trust) {
  /** @param {string} why */
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

/**
 * Why a client_options entry is refused, or null. `own` is the app's own pusher-js options.
 * @param {string} key
 * @param {unknown} value
 * @param {Trust} trust
 * @param {Record<string, unknown>} own
 * @returns {string | null}
 */
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
 * @param {Record<string, unknown> & { app: string, channelAuthorization: { endpoint: string }, userAuthentication: { endpoint: string } }} cfg
 *   the answer as read (readAssignment checked app, key and the endpoints' types; nothing else yet)
 * @param {URL} configUrl
 * @param {Trust} trust
 * @param {Record<string, unknown>} own  the app's own pusher-js options
 * @returns {Assignment}
 * @throws {RefusedAnswer}
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
  const f = /** @type {Record<string, unknown> | null | undefined} */ (cfg.failover);
  const failover = f === undefined || f === null ||
    (typeof f === 'object' && !Array.isArray(f) && ['from', 'to', 'reason'].every((k) => typeof f[k] === 'string' && f[k].length <= 200));
  if (!failover) problems.push(`failover ${show(f)} is not null or { from, to, reason } (strings)`);
  /** @type {Record<string, unknown>} */
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
  return /** @type {Assignment} */ ({
    ...cfg,
    client_options: clientOptions,
    channelAuthorization: { endpoint: channel.url },
    userAuthentication: { endpoint: user.url },
  });
}

// ---------------------------------------------------------------------------
// presence: the other apps' members, merged into a presence channel
// ---------------------------------------------------------------------------

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
 * (`presence_bridge`, in `snapshots`); then each change it publishes
 * (BRIDGE_EVENT, ordered per member by the source webhook's time).
 * `channel.members` and the standard `pusher:member_added` /
 * `pusher:member_removed` (and so laravel-echo's here / joining / leaving) then
 * cover every app, once per real change: a user present through two apps is
 * one member, until it leaves the last.
 *
 * Installs itself as the channel's emit, and as `channel.__dualEmit` (what a
 * move's interceptors deliver through) and `channel.__dualBridgeSync` (re-read
 * the snapshot after a move's re-subscription).
 *
 * @param {Channel} channel  a pusher-js presence channel
 * @param {() => string} appNow  the app the client is on now: its own members are pusher-js's
 * @param {Map<string, unknown>} snapshots  channel name → { app: { user id: info } }, as the last authorization answered
 */
function bridgePresence(channel, appNow, snapshots) {
  const bridge = new PresenceBridge(channel, appNow, snapshots);
  /** @type {Emit} */
  const handler = (event, data, meta) => bridge.handle(event, data, meta);
  channel.__dualEmit = handler;
  channel.__dualBridgeSync = () => bridge.sync();
  channel.emit = handler;
}

/**
 * One bridged presence channel's merge (see bridgePresence): who is present
 * through this app (`native`, as pusher-js reports them), through the others
 * (`remote`), and who left through this app and is held for LEAVE_GRACE_MS.
 */
class PresenceBridge {
  /**
   * @param {Channel} channel
   * @param {() => string} appNow
   * @param {Map<string, unknown>} snapshots
   */
  constructor(channel, appNow, snapshots) {
    this.channel = channel;
    this.appNow = appNow;
    this.snapshots = snapshots;
    /** pusher-js's own emit: what the app's handlers get. */
    this.emit = rawEmit(channel);
    /** @type {Map<string, Map<string, unknown>>} app → user id → info */
    this.remote = new Map();
    /** @type {Map<string, unknown>} user id → info, as this app reports them */
    this.native = new Map();
    /** @type {Map<string, [number, number]>} app + user id → [time_ms, seq] of the last change applied */
    this.latest = new Map();
    /** @type {Map<string, Timer>} user id → timer: left through this app, held for LEAVE_GRACE_MS */
    this.leaving = new Map();
    /** Whether the service bridges this channel (a snapshot or a change was seen). */
    this.bridged = false;
  }

  /** @returns {Members} */
  members() {
    return this.channel.members;
  }

  /**
   * Everything the channel emits: the merge's part, or pusher-js's own.
   * @type {Emit}
   */
  handle(event, data, meta) {
    if (event === 'pusher:subscription_succeeded') {
      this.sync();
      return this.emit(event, this.members(), meta);
    }
    if (event === BRIDGE_EVENT) return this.change(data);
    if (event === 'pusher:member_added' && data) return this.memberAdded(/** @type {Member} */ (data), meta);
    if (event === 'pusher:member_removed' && data) return this.memberRemoved(/** @type {Member} */ (data), meta);
    return this.emit(event, data, meta);
  }

  /**
   * At (re-)subscription: this app's members as pusher-js has them, the other
   * apps' from the authorization's snapshot, merged into `channel.members`.
   */
  sync() {
    const snapshot = this.snapshots.get(this.channel.name);
    if (snapshot && typeof snapshot === 'object') this.bridged = true;
    this.native.clear();
    this.members().each((m) => this.native.set(String(m.id), m.info));
    for (const t of this.leaving.values()) clearTimeout(t);
    this.leaving.clear();
    this.remote.clear();
    this.latest.clear();
    for (const [app, users] of Object.entries(snapshot || {})) {
      if (app === this.appNow() || !users || typeof users !== 'object') continue;
      this.remote.set(app, new Map(Object.entries(users)));
    }
    for (const users of this.remote.values()) for (const [u, info] of users) if (!this.native.has(u)) this.put(u, info);
  }

  /**
   * A member of another app came or went (BRIDGE_EVENT); older changes arriving late are ignored.
   * @param {unknown} raw  a BridgeChange, or its JSON
   */
  change(raw) {
    const d = bridgeChange(raw, this.appNow());
    if (!d) return;
    const u = String(d.user_id);
    if (!this.newest(`${d.app}\u0000${u}`, [Number(d.time_ms) || 0, Number(d.seq) || 0])) return; // an older change, late
    this.bridged = true;
    const before = this.shown(u);
    const had = this.elsewhere(u);
    if (!this.remote.has(d.app)) this.remote.set(d.app, new Map());
    const info = d.user_info === undefined ? null : d.user_info;
    if (d.present) {
      this.remote.get(d.app).set(u, info);
      this.stopLeaving(u); // left through this app and present through another: moved, not gone
      if (!before) {
        this.put(u, info);
        this.emit('pusher:member_added', { id: u, info });
      } else if (!this.native.has(u)) {
        this.members().members[u] = info;
      }
    } else {
      this.remote.get(d.app).delete(u);
      if (before && !this.shown(u)) {
        this.drop(u);
        this.emit('pusher:member_removed', { id: u, info: had ? had.info : null });
      }
    }
  }

  /**
   * Whether a change at `at` ([time_ms, seq]) is newer than the last one applied for `key`; if so, it is the last one now.
   * @param {string} key
   * @param {[number, number]} at
   */
  newest(key, at) {
    const last = this.latest.get(key);
    if (last && (at[0] < last[0] || (at[0] === last[0] && at[1] <= last[1]))) return false;
    this.latest.set(key, at);
    return true;
  }

  /**
   * pusher-js says a member joined through this app: told only if not listed already (through another app).
   * @param {Member} data
   * @param {unknown} meta
   */
  memberAdded(data, meta) {
    const u = String(data.id);
    const before = this.shown(u);
    this.native.set(u, data.info);
    this.stopLeaving(u);
    if (before) return; // listed already (through another app); pusher-js refreshed its info
    return this.emit('pusher:member_added', data, meta);
  }

  /**
   * pusher-js says a member left through this app (and took it out of
   * `channel.members`): listed again while present through another app; on a
   * bridged channel held for LEAVE_GRACE_MS (it may be moving there).
   * @param {Member} data
   * @param {unknown} meta
   */
  memberRemoved(data, meta) {
    const u = String(data.id);
    this.native.delete(u);
    const there = this.elsewhere(u);
    if (there) return this.put(u, there.info); // still present through another app
    if (this.bridged) {
      this.put(u, data.info);
      this.leaving.set(u, later(() => {
        this.leaving.delete(u);
        if (this.shown(u)) return;
        this.drop(u);
        this.emit('pusher:member_removed', data);
      }, LEAVE_GRACE_MS));
      return;
    }
    return this.emit('pusher:member_removed', data, meta);
  }

  /**
   * The member's info through another app, if present through one.
   * @param {string} u
   * @returns {{ info: unknown } | null}
   */
  elsewhere(u) {
    for (const users of this.remote.values()) if (users.has(u)) return { info: users.get(u) };
    return null;
  }

  /** @param {string} u  whether the member is listed (here, held, or elsewhere) */
  shown(u) {
    return this.native.has(u) || this.leaving.has(u) || this.elsewhere(u) !== null;
  }

  /** @param {string} u */
  stopLeaving(u) {
    if (!this.leaving.has(u)) return;
    clearTimeout(this.leaving.get(u));
    this.leaving.delete(u);
  }

  /** @param {string} u @param {unknown} info  listed in `channel.members` */
  put(u, info) {
    const m = this.members();
    if (!Object.prototype.hasOwnProperty.call(m.members, u)) m.count++;
    m.members[u] = info;
  }

  /** @param {string} u  no longer listed in `channel.members` */
  drop(u) {
    const m = this.members();
    if (!Object.prototype.hasOwnProperty.call(m.members, u)) return;
    delete m.members[u];
    m.count--;
  }
}

/** @typedef {{ id: string, info: unknown }} Member  as pusher-js's member events carry it */

/**
 * One change the service publishes for another app's member (BRIDGE_EVENT).
 * @typedef {object} BridgeChange
 * @property {string} app
 * @property {string | number} user_id
 * @property {unknown} [user_info]
 * @property {boolean} [present]
 * @property {number} [time_ms]  the source webhook's time
 * @property {number} [seq]  its order within that time
 */

/**
 * A BRIDGE_EVENT's data, if it is one about another app than `appNow`, else null.
 * @param {unknown} raw
 * @param {string} appNow
 * @returns {BridgeChange | null}
 */
function bridgeChange(raw, appNow) {
  let d = raw;
  if (typeof d === 'string') {
    try {
      d = JSON.parse(d);
    } catch {
      return null;
    }
  }
  const c = /** @type {BridgeChange} */ (d);
  if (!c || typeof c.app !== 'string' || c.user_id === undefined || c.app === appNow) return null;
  return c;
}

/**
 * Presence members as id → info (null for other channels).
 * @param {Channel} channel
 * @returns {Map<string, unknown> | null}
 */
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
 *
 * @param {Map<string, unknown> | null | undefined} before
 * @param {Map<string, unknown> | null} after
 * @param {Emit} deliver
 */
function memberChanges(before, after, deliver) {
  if (!before || !after) return;
  for (const [id, info] of before) if (!after.has(id)) deliver('pusher:member_removed', { id, info });
  for (const [id, info] of after) if (!before.has(id)) deliver('pusher:member_added', { id, info });
}

// ---------------------------------------------------------------------------
// merge: what several connections receive, as one stream
// ---------------------------------------------------------------------------

/**
 * The connections of a move: the client's own before the switch, the second one, the client's own after it.
 * @typedef {'before' | 'second' | 'after'} Source
 */
/** @typedef {{ source: Source, key: string, deliver: () => void, at: number }} Held  a copy waiting for the primary's */
/** @typedef {(source: Source, event: string, data: unknown, primary: Source, held: number) => void} Trace  what a filter is offered */

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
  /**
   * @param {((event: string, data: unknown) => string) | null | undefined} idOf  an id per event (connect's eventId), else matched by event and data
   * @param {{ holdMs?: number, trace?: Trace | null }} [options]
   */
  constructor(idOf, { holdMs = HOLD_MS, trace } = {}) {
    this.trace = trace || null;
    this.idOf = idOf || null;
    this.holdMs = holdMs;
    /** @type {Source} */
    this.primary = 'before';
    // The client's own instance on the new app ('after') may receive anything delivered before the switch too.
    /** @type {Set<Source>} */
    this.sources = new Set(['before', 'second', 'after']);
    /** @type {Map<Source, Map<string, number>>} source → key → copies still to come from it, already delivered */
    this.credit = new Map();
    /** @type {Held[]} oldest first */
    this.held = [];
    /** @type {Set<string>} */
    this.ids = new Set();
    /** @type {Timer | null} */
    this.timer = null;
    this.matched = false; // one event seen on two connections
    /** @type {Map<Source, number>} source → when it last delivered anything */
    this.lastSeen = new Map();
  }

  /**
   * The primary connection from now on, and the connections that may still send.
   * @param {Source} primary
   * @param {Source[]} sources
   */
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

  /**
   * One event as connection `source` received it; `deliver` hands it to the app (once, if at all).
   * @param {Source} source
   * @param {string} event
   * @param {unknown} data
   * @param {() => void} deliver
   */
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

  /**
   * Delivers one; every connection that may still send a copy of it is owed that copy.
   * @param {Held} item
   * @param {Source} [alsoFrom]  a connection whose copy was matched already
   */
  deliver(item, alsoFrom) {
    for (const s of this.sources) {
      if (s === item.source || s === alsoFrom) continue;
      if (s === this.primary && item.source !== this.primary) continue; // the primary has passed it
      const owed = this.creditOf(s);
      owed.set(item.key, (owed.get(item.key) || 0) + 1);
    }
    item.deliver();
  }

  /** @param {Source} source @returns {Map<string, number>} */
  creditOf(source) {
    if (!this.credit.has(source)) this.credit.set(source, new Map());
    return this.credit.get(source);
  }

  /** Delivers held copies HOLD_MS after they came, if the primary has not by then. */
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

/**
 * @param {unknown} data
 * @returns {string} what tells two copies of an event's data apart from other data
 */
function fingerprint(data) {
  if (typeof data === 'string') return `s${data}`;
  try {
    return `j${JSON.stringify(data)}`;
  } catch {
    return `o${String(data)}`;
  }
}

// ---------------------------------------------------------------------------
// recovery: what a channel missed while its connection was away, from the service's buffer
//
// With [recovery], the service keeps every event published through its fan-out, per
// channel, for a window, and each channel authorization answer carries a token
// (`recovery.token`, bound to the app, the socket and the channel) for
// POST /recover/{app}. Live events carry no id, so what was delivered is matched by
// content (event name and data):
//
// - At a channel's first subscription the helper asks for a position only (an anchor)
//   and from then on lists what it delivers.
// - When the channel is subscribed again on another socket (a reconnect), it holds the
//   channel's live events and asks for what was published since the position. The
//   returned events are walked in order, each matched one-to-one with the next equal
//   delivered one at or after a cursor (which then moves past it: a greedy subsequence
//   match; delivered events that are not in the buffer are passed over). Matched ones
//   were delivered; the others are delivered now, in the buffer's order. Where content
//   alone cannot tell (an equal event delivered only before the cursor: reordered, or
//   one that never went through the buffer), it delivers: a rare repeat, never a loss.
//   Then the held live events follow, less the live copies of what was just recovered
//   (such a copy is also dropped when it comes within LATE_COPY_MS). The position moves
//   to the answer's and the list starts again.
// - Events whose publisher left out one of this client's own sockets are not delivered.
// - Every resyncMs, and when the list reaches MAX_DELIVERED, the same is done without
//   holding (a re-sync): the position stays inside the buffer's window.
// - What cannot be recovered (the buffer lost it, or the service cannot answer in
//   maxHoldMs) is told once, as RECOVERY_GAP on the channel: the app reloads its state.
//
// Only what passes through the service's fan-out is in the buffer: client events,
// events published straight to Pusher and presence member events are never matched
// or recovered (they pass through; members re-sync on subscription anyway).
// ---------------------------------------------------------------------------

/** Emitted on a channel, once per recovery that could not get everything: `{ channel, reason, recovered }`. */
export const RECOVERY_GAP = 'pusher-dual-auth:recovery_gap';
/** The delivered list asks for a re-sync at this length, and forgets its oldest beyond MAX_DELIVERED_HARD. */
const MAX_DELIVERED = 500;
const MAX_DELIVERED_HARD = 2000;
/** A live copy of a recovered event may still come this long after it was recovered. */
const LATE_COPY_MS = 3000;
/**
 * The service records an event once Pusher took it, so a client can get it live before
 * a read that does not hold it yet: delivered events this recent stay listed past a
 * position (the next answer has them).
 */
const KEEP_RECENT_MS = 10000;
/** Channels asking within this long go in one request (a reconnect re-subscribes them all). */
const BATCH_MS = 10;
const MAX_CHANNELS_PER_REQUEST = 100;
/** A failed request is asked again after this, doubling (jittered down to half), within maxHoldMs. */
const RECOVER_RETRY_MS = 250;

/**
 * recovery's settings, defaults filled in.
 * @typedef {object} RecoverySettings
 * @property {() => string | null} endpoint  POST /recover/{app} of the app the client is on (null: none known)
 * @property {typeof fetch} fetch
 * @property {() => number} random
 * @property {Record<string, string>} headers
 * @property {boolean} always  on before any authorization answer carried a token (else: once one did)
 * @property {number} resyncMs
 * @property {number} maxHoldMs
 * @property {(name: string) => boolean} skip  channels left alone (connect's control channel)
 */

/**
 * One channel's recovery.
 * @typedef {object} Track
 * @property {Channel} channel
 * @property {Emit} next  what the channel emits through below recovery (the presence merge, or pusher-js's own)
 * @property {string | null} socket  the socket it was last subscribed on
 * @property {string | null} position  the service's, opaque: ask from here next time
 * @property {boolean} lost  a position was wanted and not had: a reconnect cannot be recovered, and says so
 * @property {{ key: string, at: number }[]} delivered  what was delivered since the position (not client events)
 * @property {{ key: string, until: number }[]} recovered  recovered events whose live copy may still come
 * @property {{ key: string, event: string, deliver: () => void }[] | null} held  live events held during a recovery
 * @property {number} gen  the operation under way (a newer one supersedes it)
 * @property {Promise<void> | null} running
 * @property {Promise<void> | null} anchoring
 */

/**
 * One channel's part of a request, and where its answer goes.
 * @typedef {{ name: string, socket: string, since?: string, token?: string, deadline: number, resolve: (r: Asked) => void }} Ask
 */
/**
 * One channel's answer: its events and position, a refusal (a code: no use asking again), or a failure (ask again).
 * @typedef {{ answer?: { events: unknown[], position?: unknown, gap?: unknown }, refused?: string, failed?: string, retryAfterMs?: number | null }} Asked
 */

/**
 * Recovery for one pusher-js instance (see above). Channels join through attach().
 */
class Recovery {
  /**
   * @param {PusherLike} pusher
   * @param {RecoverySettings} s
   */
  constructor(pusher, s) {
    this.pusher = pusher;
    this.s = s;
    /** The service has [recovery]: an authorization answer carried a token (or `always`). */
    this.on = s.always;
    /** The service said it has none (404), or stop(): no more requests. */
    this.off = false;
    /**
     * socket id → the recover endpoint of the app that issued its tokens, and channel → token.
     * @type {Map<string, { url: string | null, channels: Map<string, string> }>}
     */
    this.tokens = new Map();
    /** @type {string[]} this client's socket ids, newest last */
    this.sockets = [];
    /** @type {Set<Track>} */
    this.tracks = new Set();
    /** @type {Ask[]} */
    this.asks = [];
    /** @type {Timer | null} */
    this.batch = null;
    /** @type {Timer | null} */
    this.ticker = null;
    this.perRequest = MAX_CHANNELS_PER_REQUEST;
    pusher.connection.bind('connected', () => this.own(pusher.connection.socket_id));
    this.takeTokens(pusher);
  }

  active() {
    return this.on && !this.off && !!this.s.endpoint();
  }

  stop() {
    this.off = true;
    clearTimeout(this.ticker);
  }

  /**
   * Recovers `channel` from now on: its emit and its authorization go through here.
   * @param {Channel} channel
   */
  attach(channel) {
    if (channel.__dualRecovery || String(channel.name).startsWith('#') || this.s.skip(channel.name)) return;
    /** @type {Track} */
    const t = {
      channel, next: originalEmit(channel), socket: null, position: null, lost: false, delivered: [],
      recovered: [], held: null, gen: 0, running: null, anchoring: null,
    };
    channel.__dualRecovery = t;
    /** @type {Emit} */
    const handler = (event, data, meta) => this.emitted(t, event, data, meta);
    channel.__dualEmit = handler;
    channel.emit = handler;
    channel.__dualResync = () => this.resubscribed(t);
    channel.__dualRecover = () => this.subscribed(t);
    this.tracks.add(t);
    this.tick();
    if (channel.subscribed) this.subscribed(t); // recover() on an instance already subscribed
  }

  /**
   * The instance's channel authorization answers, whatever makes them (pusher-js's own
   * transport, a customHandler, the helper's retry): the token is taken out (pusher-js
   * never sees it) and kept for that socket; the first one turns recovery on. pusher-js
   * (>= 8) authorizes every channel through `config.channelAuthorizer`, and builds a
   * new `config` at switchCluster: each one is wrapped as it is set.
   * @param {PusherLike} pusher
   */
  takeTokens(pusher) {
    /** @param {PusherConfig | undefined} config */
    const wrap = (config) => {
      const authorizer = config && config.channelAuthorizer;
      if (typeof authorizer !== 'function' || authorizer.__dualTokens) return config;
      /** @type {PusherConfig['channelAuthorizer']} */
      const wrapped = (params, callback) => authorizer(params, (error, data) => {
        if (!error && data && typeof data === 'object' && 'recovery' in data) {
          const r = /** @type {{ token?: unknown } | null} */ (data.recovery);
          delete data.recovery;
          if (r && typeof r.token === 'string') this.token(params.socketId, params.channelName, r.token);
        }
        callback(error, data);
      });
      wrapped.__dualTokens = true;
      config.channelAuthorizer = wrapped;
      return config;
    };
    let config = wrap(pusher.config);
    Object.defineProperty(pusher, 'config', {
      configurable: true,
      enumerable: true,
      get: () => config,
      set: (c) => {
        config = wrap(c);
      },
    });
  }

  /**
   * A token, kept with the endpoint of the app it came from (a move changes apps; its tokens are for one).
   * @param {string} socket @param {string} name @param {string} token
   */
  token(socket, name, token) {
    if (!this.tokens.has(socket)) this.tokens.set(socket, { url: this.s.endpoint(), channels: new Map() });
    this.tokens.get(socket).channels.set(name, token);
    if (this.on) return;
    this.on = true;
    // Channels subscribed before recovery was known to be on (public ones) anchor now.
    for (const t of this.tracks) if (t.socket && t.position === null && !t.running) this.start(t, 'anchor');
  }

  /** @param {string | undefined} socket  one of this client's socket ids (the newest) */
  own(socket) {
    if (!socket || this.sockets[this.sockets.length - 1] === socket) return;
    this.sockets = [...this.sockets.filter((s) => s !== socket), socket].slice(-20);
    const recent = new Set(this.sockets.slice(-3));
    for (const s of this.tokens.keys()) if (!recent.has(s)) this.tokens.delete(s);
  }

  /**
   * Everything the channel emits (or a move delivers into it).
   * @param {Track} t
   * @param {string} event
   * @param {unknown} data
   * @param {unknown} meta
   */
  emitted(t, event, data, meta) {
    if (event === 'pusher:subscription_succeeded') {
      this.subscribed(t);
    } else if (!/^pusher[:_]|^pusher-dual-auth:/.test(event) && event !== BRIDGE_EVENT) {
      const key = eventKey(event, data);
      const deliver = () => t.next(event, data, meta);
      if (!t.held && this.early(t)) t.held = []; // the recovery its subscription_succeeded starts delivers it, in order
      else if (t.held && !t.running && t.channel.subscribed) this.release(t); // held early, then subscribed unseen: out first
      if (t.held) return void t.held.push({ key, event, deliver });
      return this.live(t, key, event, deliver);
    }
    return t.next(event, data, meta);
  }

  /**
   * A live event on a new connection before the channel's subscription_succeeded there:
   * the server registers the socket on the channel before it sends that, so a publish
   * in between reaches it first, ahead of what was missed (a planned move has its own
   * filter for this, and is left alone).
   * @param {Track} t
   */
  early(t) {
    const socket = this.pusher.connection.socket_id;
    return this.active() && t.socket !== null && !!socket && socket !== t.socket && !t.channel.subscribed && !t.channel.__dualMoving;
  }

  /**
   * A live event: dropped if it is the late copy of one just recovered, else listed and delivered.
   * @param {Track} t @param {string} key @param {string} event @param {() => void} deliver
   */
  live(t, key, event, deliver) {
    const now = Date.now();
    t.recovered = t.recovered.filter((r) => r.until > now);
    const copy = t.recovered.findIndex((r) => r.key === key);
    if (copy >= 0) return void t.recovered.splice(copy, 1);
    if (this.active() && !event.startsWith('client-')) {
      t.delivered.push({ key, at: now });
      if (t.delivered.length >= MAX_DELIVERED && t.position !== null && !t.running && t.socket === this.pusher.connection.socket_id) {
        this.start(t, 'resync');
      }
      if (t.delivered.length > MAX_DELIVERED_HARD) t.delivered.splice(0, t.delivered.length - MAX_DELIVERED_HARD);
    }
    deliver();
  }

  /**
   * pusher:subscription_succeeded: the first one anchors; one on another socket recovers, holding live events.
   * @param {Track} t
   */
  subscribed(t) {
    const socket = this.pusher.connection.socket_id || null;
    this.own(socket);
    const again = t.socket !== null;
    if (again && t.socket === socket) return; // the same connection: nothing was missed
    t.socket = socket;
    if (!again) t.delivered = [];
    if (this.active() && again) {
      t.held = t.held || [];
      return this.start(t, 'recover');
    }
    this.release(t);
    if (this.active()) this.start(t, 'anchor');
  }

  /**
   * After a move (connect's handover), which kept the channel live throughout: a re-sync on the new socket.
   * @param {Track} t
   */
  resubscribed(t) {
    const socket = this.pusher.connection.socket_id || null;
    if (!t.socket || t.socket === socket) return;
    this.own(socket);
    t.socket = socket;
    if (this.active()) this.start(t, 'resync');
  }

  /** Every resyncMs: a re-sync of each channel (or an anchor, for one without a position). */
  tick() {
    if (this.ticker) return;
    const loop = () => {
      this.ticker = later(loop, this.s.resyncMs);
      const { connection } = this.pusher;
      for (const t of this.tracks) {
        if (this.pusher.channel(t.channel.name) !== t.channel) this.tracks.delete(t); // unsubscribed
        else if (this.active() && !t.running && t.channel.subscribed && connection.state === 'connected' && t.socket === connection.socket_id) {
          this.start(t, t.position === null ? 'anchor' : 'resync');
        }
      }
    };
    this.ticker = later(loop, this.s.resyncMs);
  }

  /**
   * Starts an operation on the channel. One at a time: a reconnect's recovery
   * supersedes one under way (whose answer is then ignored), anything else waits
   * for the next tick.
   * @param {Track} t
   * @param {'anchor' | 'recover' | 'resync'} kind
   */
  start(t, kind) {
    if (kind !== 'recover' && t.running) return;
    const gen = ++t.gen;
    const current = () => t.gen === gen;
    const op = (async () => {
      if (kind === 'anchor') return this.anchor(t);
      if (t.anchoring) await t.anchoring; // its position is the one to recover from
      if (current()) await this.recover(t, current, kind === 'resync');
    })().catch(() => {}).finally(() => {
      if (!current()) return;
      t.running = null;
      this.release(t);
    });
    t.running = op;
  }

  /**
   * Asks for the position to start from. It stands even if a recovery superseded the
   * anchor (that recovery waits for it).
   * @param {Track} t
   */
  async anchor(t) {
    const sentAt = Date.now();
    const p = this.ask(t, undefined, sentAt + this.s.maxHoldMs, () => true).then((r) => {
      const position = r && r.answer && r.answer.position;
      if (typeof position === 'string' && position) {
        t.position = position;
        t.lost = false;
        t.delivered = t.delivered.filter((d) => d.at >= sentAt - KEEP_RECENT_MS);
      } else {
        t.lost = true;
      }
    });
    t.anchoring = p;
    try {
      await p;
    } finally {
      if (t.anchoring === p) t.anchoring = null;
    }
  }

  /**
   * What was published since the position, delivered if it was not already. `quiet`
   * (a re-sync: the connection stayed up) tells no gap and keeps the position on failure.
   * @param {Track} t
   * @param {() => boolean} current
   * @param {boolean} quiet
   */
  async recover(t, current, quiet) {
    if (t.position === null) {
      if (!quiet && t.lost) this.gap(t, 'unavailable', 0); // nothing to recover from
      this.release(t);
      return this.anchor(t);
    }
    const sentAt = Date.now();
    const r = await this.ask(t, t.position, sentAt + this.s.maxHoldMs, current);
    if (!r || !current()) return;
    if (r.answer) {
      this.apply(t, r.answer, sentAt, quiet);
    } else if (!quiet) {
      t.position = null;
      this.gap(t, r.refused || 'unavailable', 0);
    }
    if (t.position === null && !quiet) {
      this.release(t);
      await this.anchor(t); // a position again, for the next reconnect
    }
  }

  /**
   * One channel's answer: its events matched against what was delivered, the rest delivered.
   * @param {Track} t
   * @param {{ events: unknown[], position?: unknown, gap?: unknown }} answer
   * @param {number} sentAt
   * @param {boolean} quiet
   */
  apply(t, answer, sentAt, quiet) {
    const now = Date.now();
    /** @type {Map<string, number[]>} key → its indexes in t.delivered, ascending */
    const where = new Map();
    t.delivered.forEach((d, i) => (where.get(d.key) || where.set(d.key, []).get(d.key)).push(i));
    const matched = new Set();
    let cursor = 0; // delivered entries before it are passed: matched, or not in the buffer
    let recovered = 0;
    for (const raw of answer.events) {
      const e = /** @type {{ event?: unknown, data?: unknown, socket_id?: unknown }} */ (raw);
      if (!e || typeof e.event !== 'string' || typeof e.data !== 'string' || /^pusher[:_]/.test(e.event)) continue;
      if (typeof e.socket_id === 'string' && this.sockets.includes(e.socket_id)) continue; // its publisher left this client out
      const got = decodeRecovered(t.channel, e.event, e.data);
      if (!got) continue;
      const key = eventKey(got.event, got.data);
      const same = where.get(key) || [];
      while (same.length && same[0] < cursor) same.shift();
      if (same.length) {
        const i = same.shift(); // the next equal one delivered at or after the cursor: this one, delivered live
        matched.add(i);
        cursor = i + 1;
        continue;
      }
      t.recovered.push({ key, until: now + LATE_COPY_MS });
      recovered++;
      t.next(got.event, got.data, {});
    }
    t.delivered = t.delivered.filter((d, i) => !matched.has(i) && d.at >= sentAt - KEEP_RECENT_MS);
    t.position = typeof answer.position === 'string' && answer.position ? answer.position : null;
    if (answer.gap && !quiet) this.gap(t, String(answer.gap), recovered);
  }

  /**
   * Tells the app what could not be recovered.
   * @param {Track} t @param {string} reason @param {number} recovered
   */
  gap(t, reason, recovered) {
    t.next(RECOVERY_GAP, { channel: t.channel.name, reason, recovered });
  }

  /**
   * The held live events, delivered (less the copies of what was just recovered).
   * @param {Track} t
   */
  release(t) {
    const held = t.held;
    t.held = null;
    if (held) for (const h of held) this.live(t, h.key, h.event, h.deliver);
  }

  /**
   * The channel's answer, asked again while it fails and time remains; a token refused
   * as missing or expired is renewed once (by authorizing the channel again). Null if
   * superseded.
   * @param {Track} t
   * @param {string | undefined} since  undefined: an anchor
   * @param {number} deadline
   * @param {() => boolean} current
   * @returns {Promise<Asked | null>}
   */
  async ask(t, since, deadline, current) {
    let renewed = false;
    for (let n = 0; ; n++) {
      const name = t.channel.name;
      const tokens = this.tokens.get(t.socket);
      const token = tokens && tokens.channels.get(name);
      /** @type {Asked} */
      const r = await new Promise((resolve) => this.queue({ name, socket: t.socket, since, token, deadline, resolve }));
      if (!current()) return null;
      if (r.answer) return r;
      if (r.refused) {
        if (renewed || !/^(missing|expired)_token$/.test(r.refused) || !(await this.reauthorize(t, deadline))) return r;
        renewed = true;
        continue;
      }
      const wait = typeof r.retryAfterMs === 'number' ? r.retryAfterMs : RECOVER_RETRY_MS * 2 ** n * (0.5 + this.s.random() / 2);
      if (this.off || Date.now() + wait >= deadline) return r;
      await sleep(wait);
      if (!current()) return null;
    }
  }

  /**
   * A fresh token: the channel authorized again on its socket (a host call; pusher-js is not told).
   * @param {Track} t @param {number} deadline
   * @returns {Promise<boolean>}
   */
  reauthorize(t, deadline) {
    const { channel } = t;
    if (!/^(private|presence)-/.test(channel.name) || typeof channel.authorize !== 'function' || !t.socket) return Promise.resolve(false);
    const done = new Promise((resolve) => channel.authorize(t.socket, (error) => resolve(!error)));
    return within(done, Math.max(0, deadline - Date.now()), 'authorizing again').catch(() => false);
  }

  /** @param {Ask} a  sent with the others asked within BATCH_MS */
  queue(a) {
    this.asks.push(a);
    if (!this.batch) this.batch = later(() => this.flush(), BATCH_MS);
  }

  /** One request per socket id, at most perRequest channels each. */
  flush() {
    this.batch = null;
    /** @type {Map<string, Ask[]>} */
    const bySocket = new Map();
    for (const a of this.asks) (bySocket.get(a.socket) || bySocket.set(a.socket, []).get(a.socket)).push(a);
    this.asks = [];
    for (const [socket, list] of bySocket) {
      for (let i = 0; i < list.length; i += this.perRequest) this.post(socket, list.slice(i, i + this.perRequest));
    }
  }

  /**
   * POST /recover/{app}; each channel's answer to its Ask.
   * @param {string} socket @param {Ask[]} list
   */
  async post(socket, list) {
    /** @param {Asked} r */
    const all = (r) => list.forEach((a) => a.resolve(r));
    const issuer = this.tokens.get(socket);
    const url = issuer ? issuer.url : this.s.endpoint();
    if (!url || this.off) return all({ refused: 'unavailable' });
    const channels = list.map(({ name, since, token }) => ({ channel: name, ...(since === undefined ? {} : { since }), ...(token ? { token } : {}) }));
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), Math.max(250, Math.min(...list.map((a) => a.deadline)) - Date.now()));
    let res;
    let body = null;
    try {
      res = await this.s.fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...this.s.headers },
        body: JSON.stringify({ socket_id: socket, channels }),
        signal: abort.signal,
      });
      body = await res.json().catch(() => null);
    } catch (e) {
      return all({ failed: e && e.name === 'AbortError' ? 'no answer in time' : `network error (${e && e.message})`, retryAfterMs: null });
    } finally {
      clearTimeout(timer);
    }
    const code = body && body.error && typeof body.error.code === 'string' ? body.error.code : `status ${res.status}`;
    if (res.status === 400 && code === 'too_many_channels' && list.length > 1) {
      // The service takes fewer per request than we sent: halve until it takes them.
      this.perRequest = Math.max(1, Math.floor(list.length / 2));
      for (let i = 0; i < list.length; i += this.perRequest) this.post(socket, list.slice(i, i + this.perRequest));
      return;
    }
    if (res.status === 404) this.off = true; // no [recovery] there (or no such app): no more requests
    if (res.status === 429 || res.status >= 500) {
      const after = Number(res.headers.get('retry-after'));
      return all({ failed: code, retryAfterMs: res.headers.get('retry-after') !== null && Number.isFinite(after) ? after * 1000 : null });
    }
    if (res.status !== 200 || !body || !body.channels || typeof body.channels !== 'object') {
      return all({ refused: res.status === 404 ? 'unavailable' : code });
    }
    for (const a of list) {
      const one = Object.prototype.hasOwnProperty.call(body.channels, a.name) ? body.channels[a.name] : null;
      if (one && one.error) {
        const why = String(one.error.code);
        a.resolve(why === 'buffer_unavailable' ? { failed: why, retryAfterMs: null } : { refused: why });
      } else if (one && Array.isArray(one.events)) {
        a.resolve({ answer: one });
      } else {
        a.resolve({ failed: 'no answer for the channel', retryAfterMs: null });
      }
    }
  }
}

/**
 * What a recovered event is as pusher-js would deliver it: its data parsed as pusher-js
 * parses a message's, then through the channel's own handleEvent (a private-encrypted
 * channel decrypts there), caught before it reaches anyone. Null if nothing came out.
 * @param {Channel} channel
 * @param {string} event
 * @param {string} text  the data, exactly as published
 * @returns {{ event: string, data: unknown } | null}
 */
function decodeRecovered(channel, event, text) {
  let data = text;
  try {
    data = JSON.parse(text);
  } catch {
    // not JSON: a string, as pusher-js leaves it
  }
  const handle = channel.handleEvent;
  if (typeof handle !== 'function') return { event, data };
  /** @type {{ event: string, data: unknown } | null} */
  let out = null;
  /** @param {string} e @param {unknown} d */
  const caught = (e, d) => {
    if (!out) out = { event: e, data: d };
  };
  try {
    handle.call(Object.create(channel, { emit: { value: caught } }), { event, channel: channel.name, data });
  } catch {
    return null;
  }
  return out;
}

/** @param {string} event @param {unknown} data  what tells an event from others: its name and data */
const eventKey = (event, data) => `${event}\u0000${fingerprint(data)}`;

/**
 * POST /recover/{app} beside a channel authorization endpoint `…/auth/{app}`, or null.
 * @param {string | undefined} authEndpoint
 * @returns {string | null}
 */
function recoverUrlOf(authEndpoint) {
  if (typeof authEndpoint !== 'string') return null;
  let u;
  try {
    u = new URL(authEndpoint, typeof location !== 'undefined' ? location.href : undefined);
  } catch {
    return null;
  }
  const m = /^(.*)\/auth\/([^/]+)\/?$/.exec(u.pathname);
  if (!m) return null;
  u.pathname = `${m[1]}/recover/${m[2]}`;
  u.search = '';
  u.hash = '';
  return u.href;
}

/**
 * @param {import('./pusher-dual-auth').RecoveryOptions & { fetch?: typeof fetch, random?: () => number, headers?: Record<string, string> }} o
 * @param {Pick<RecoverySettings, 'endpoint' | 'skip'> & { always: boolean }} fixed
 * @returns {RecoverySettings}
 */
function recoverySettingsOf(o, fixed) {
  const { resyncMs = 60000, maxHoldMs = 5000, headers = {}, fetch: fetchImpl = globalThis.fetch, random = Math.random } = o;
  const always = o.always === undefined ? fixed.always : o.always === true;
  // Called as a plain function: a browser's fetch called as a method of another
  // object throws "Illegal invocation" (Node's does not).
  const fetch = (/** @type {Parameters<typeof globalThis.fetch>} */ ...a) => fetchImpl(...a);
  return { ...fixed, always, resyncMs, maxHoldMs, headers, fetch, random };
}

/**
 * Recovery for plain pusher-js (without connect): after each reconnect, every channel
 * gets what was published through the service while it was away (see above).
 * Call it right after `new Pusher(…)`, before subscribing: it takes the tokens from the
 * channels' authorization answers (whatever authorizes them: pusher-js's own
 * transport, a customHandler, retryingAuth). A channel subscribed before is authorized
 * again once to get one.
 *
 * @param {PusherLike} pusher
 * @param {import('./pusher-dual-auth').RecoverOptions} [options]
 * @returns {{ stop: () => void }}
 */
export function recover(pusher, options = {}) {
  const base = typeof location !== 'undefined' ? location.href : undefined;
  const own = pusher.options || {}; // pusher-js < 8.5 keeps no options: pass `endpoint`
  const auth = /** @type {{ endpoint?: string } | undefined} */ (own.channelAuthorization);
  const url = options.endpoint
    ? new URL(options.endpoint, base).href
    : recoverUrlOf((auth && auth.endpoint) || /** @type {string | undefined} */ (own.authEndpoint));
  const endpoint = () => url;
  if (!url) {
    throw new TypeError('recover(): pass { endpoint: "https://…/recover/APP" }: it is not …/auth/APP with /recover/APP beside it');
  }
  const r = new Recovery(pusher, recoverySettingsOf(options, { endpoint, skip: () => false, always: true }));
  const subscribeHere = pusher.subscribe.bind(pusher);
  pusher.subscribe = (name) => {
    const channel = subscribeHere(name);
    r.attach(channel);
    return channel;
  };
  for (const channel of pusher.allChannels()) r.attach(channel);
  return { stop: () => r.stop() };
}

// ---------------------------------------------------------------------------
// retry: authorizations refused for load, asked again
// ---------------------------------------------------------------------------

/**
 * Statuses worth another attempt: the service (or a proxy) overloaded or its host too
 * slow (429, 503, 504), or a proxy whose upstream went away mid-request (502: a replica
 * restarting). Signing is pure, so an authorization may always be asked again.
 */
const LOAD_STATUSES = new Set([429, 502, 503, 504]);

/**
 * retryingAuth's settings with their defaults filled in. `_onBridge` is
 * connect()'s: it is handed the presence bridge's members of an authorization answer.
 * @typedef {Required<Omit<RetryingAuthOptions, 'endpoint' | 'headersProvider' | 'paramsProvider' | 'onRetry'>> &
 *   Pick<RetryingAuthOptions, 'headersProvider' | 'paramsProvider' | 'onRetry'> & {
 *   endpointNow: () => string,
 *   _onBridge?: (channelName: string, members: unknown) => void,
 * }} RetrySettings
 */

/**
 * A pusher-js `customHandler` for `channelAuthorization` (kind 'channel') or
 * `userAuthentication` (kind 'user') that retries what was refused for load
 * (429, 503, 504), lost by a proxy (502), timed out, or failed on the network, honouring Retry-After
 * with jitter and a cap; never a denial (401, 403) or any other answer. It
 * sends what pusher-js's own ajax transport sends (a form POST with socket_id,
 * channel_name, your params and headers). pusher-js sees one answer: the
 * authorization when it finally works, or one error after giving up.
 *
 * @param {RetryingAuthOptions & { _onBridge?: RetrySettings['_onBridge'] }} settings
 * @returns {(authParams: AuthRequestParams, callback: AuthCallback) => void}
 */
export function retryingAuth(settings) {
  const s = retrySettingsOf(settings);
  const { maxAttempts, giveUpAfterMs, isCurrent, onRetry, endpointNow, kind } = s;
  return (authParams, callback) => {
    const started = Date.now();
    /** @param {number} n  this attempt's number, from 1 */
    const attempt = async (n) => {
      const at = endpointNow();
      let failure;
      try {
        failure = await askOnce(s, authParams, at, callback);
      } catch (e) {
        const why = e && e.name === 'AbortError' ? `no answer in ${s.timeoutMs} ms` : `network error (${e && e.message})`;
        failure = { why, retryAfterMs: null };
      }
      if (!failure) return; // answered
      const delay = retryDelay(s, n, failure.retryAfterMs);
      if (n >= maxAttempts || Date.now() - started + delay > giveUpAfterMs) {
        return callback(new Error(`${kind} authorization: gave up after ${n} attempts (${failure.why}) at ${at}`), null);
      }
      if (onRetry) onRetry({ attempt: n, delayMs: Math.round(delay), reason: failure.why, endpoint: at });
      // Retry, unless the connection this was for is gone (pusher-js authorizes again for the new one).
      setTimeout(() => {
        if (!isCurrent(authParams.socketId)) return; // stale: answering it would subscribe with a dead socket's auth
        attempt(n + 1);
      }, delay);
    };
    attempt(1);
  };
}

/**
 * @param {RetryingAuthOptions & { _onBridge?: RetrySettings['_onBridge'] }} settings
 * @returns {RetrySettings}
 */
function retrySettingsOf(settings) {
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
  return {
    endpointNow, kind, headers, headersProvider, params, paramsProvider, credentials, maxAttempts, maxDelayMs,
    giveUpAfterMs, timeoutMs, isCurrent, onRetry, fetch: fetchImpl, random, _onBridge,
  };
}

/**
 * One attempt: POSTs the authorization to `at`. Answers pusher-js (`callback`)
 * and resolves null on a 200 or a final refusal; resolves why it is worth
 * another attempt on a refusal for load; rejects on a network failure or timeout.
 *
 * @param {RetrySettings} s
 * @param {AuthRequestParams} authParams
 * @param {string} at
 * @param {AuthCallback} callback
 * @returns {Promise<{ why: string, retryAfterMs: number | null } | null>}
 */
async function askOnce(s, authParams, at, callback) {
  const { kind, credentials, headers, headersProvider, timeoutMs, fetch: fetchImpl, _onBridge } = s;
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
      body: authForm(s, authParams),
    });
  } finally {
    clearTimeout(timer);
  }
  const status = res.status;
  if (status === 200) {
    const text = await res.text();
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      callback(new Error(`${kind} authorization: invalid JSON with status 200 from ${at}`), null);
      return null;
    }
    // A bridged presence channel's other-app members: for the helper, not pusher-js.
    if (data && typeof data === 'object' && 'presence_bridge' in data) {
      if (_onBridge && kind === 'channel') _onBridge(authParams.channelName, data.presence_bridge);
      delete data.presence_bridge;
    }
    callback(null, data);
    return null;
  }
  if (!LOAD_STATUSES.has(status)) {
    callback(new Error(`${kind} authorization refused: status ${status} from ${at}`), null);
    return null;
  }
  const header = Number(res.headers.get('retry-after'));
  return { why: `status ${status}`, retryAfterMs: Number.isFinite(header) && header >= 0 ? header * 1000 : null };
}

/**
 * The form pusher-js's ajax transport sends: socket_id, channel_name (channels only), the app's params.
 * @param {RetrySettings} s
 * @param {AuthRequestParams} authParams
 * @returns {string}
 */
function authForm(s, authParams) {
  const { kind, params, paramsProvider } = s;
  const form = new URLSearchParams({ socket_id: authParams.socketId });
  if (kind === 'channel') form.set('channel_name', authParams.channelName);
  const all = { ...params, ...(paramsProvider ? paramsProvider() : {}) };
  for (const [k, v] of Object.entries(all)) form.append(k, String(v));
  return form.toString();
}

/**
 * How long before attempt `n + 1`: Retry-After plus up to 1 s of jitter, else
 * 500 ms doubling per attempt (jittered down to half); at most maxDelayMs.
 * @param {RetrySettings} s
 * @param {number} n
 * @param {number | null} retryAfterMs
 */
function retryDelay(s, n, retryAfterMs) {
  const { maxDelayMs, random } = s;
  const backoff = Math.min(maxDelayMs, 500 * 2 ** (n - 1));
  return Math.min(maxDelayMs, retryAfterMs === null ? backoff * (0.5 + random() / 2) : retryAfterMs + random() * 1000);
}

// ---------------------------------------------------------------------------
// plumbing: timers, waiting on pusher-js, intercepting a channel's emit
// ---------------------------------------------------------------------------

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * setTimeout that does not keep a Node process alive by itself (a live connection does).
 * @param {() => void} fn
 * @param {number} ms
 * @returns {Timer}
 */
function later(fn, ms) {
  const timer = setTimeout(fn, ms);
  const node = /** @type {{ unref?: () => void }} */ (/** @type {unknown} */ (timer)); // Node's Timeout (a number in browsers)
  if (node && typeof node.unref === 'function') node.unref();
  return timer;
}

/**
 * `promise`, or a rejection naming `what` after `ms`.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no success within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * The instance's connection up (now or next), or its failure.
 * @param {PusherLike} instance
 * @returns {Promise<void>}
 */
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

/**
 * The channel's next subscription_succeeded (or its error).
 * @param {Channel} channel
 * @returns {Promise<void>}
 */
function subscription(channel) {
  return new Promise((resolve, reject) => {
    const ok = () => {
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', bad);
      resolve();
    };
    /** @param {unknown} e */
    const bad = (e) => {
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', bad);
      reject(new Error(`subscription to ${channel.name} refused: ${JSON.stringify(e)}`));
    };
    channel.bind('pusher:subscription_succeeded', ok);
    channel.bind('pusher:subscription_error', bad);
  });
}

/**
 * The instance's next pusher:signin_success.
 * @param {PusherLike} instance
 * @returns {Promise<void>}
 */
function signedIn(instance) {
  return new Promise((resolve) => {
    /** @param {{ event?: string } | undefined} message */
    const ok = (message) => {
      if (!message || message.event !== 'pusher:signin_success') return;
      instance.connection.unbind('message', ok);
      resolve();
    };
    instance.connection.bind('message', ok);
  });
}

/**
 * The channel's emit as pusher-js defines it, bound to it.
 * @param {Channel} channel
 * @returns {Emit}
 */
function rawEmit(channel) {
  const proto = Object.getPrototypeOf(channel).emit;
  return (event, data, meta) => proto.call(channel, event, data, meta);
}

/**
 * What the channel emits through when no move intercepts it: the helper's layers (`__dualEmit`), or pusher-js's own.
 * @param {Channel} channel
 * @returns {Emit}
 */
function originalEmit(channel) {
  return channel.__dualEmit || rawEmit(channel);
}

/**
 * Routes everything the channel emits through `fn`; returns the undo (a no-op once another took over).
 * @param {Channel} channel
 * @param {Emit} fn
 * @returns {() => void}
 */
function intercept(channel, fn) {
  channel.emit = fn;
  return () => {
    if (channel.emit !== fn) return;
    if (channel.__dualEmit) channel.emit = channel.__dualEmit;
    else delete channel.emit;
  };
}
