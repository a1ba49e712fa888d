export interface ConnectOptions {
  /** The service's GET /client-config URL (absolute in Node; relative works in browsers). */
  configUrl: string;
  /** Your app's user id (sticky across devices, and the force lists apply); else a cookie id. */
  uid?: string;
  /** Your own pusher-js options (auth headers/params, transports, …): kept across switches. */
  options?: Record<string, unknown>;
  /**
   * Origins (`scheme://host[:port]`) besides configUrl's own where the service's auth
   * endpoints may be (an app's `auth_endpoint` on another host), e.g.
   * `['https://auth.example.com']`. Compared exactly: neither `http://`, another port nor
   * a subdomain matches. An endpoint elsewhere refuses the whole answer. Default: none.
   */
  allowedOrigins?: string[];
  /**
   * Hosts the service's `client_options` may send the connection to (`wsHost`, `httpHost`,
   * `statsHost`), e.g. `['ws.example.com']` for `client_options = { wsHost = "ws.example.com" }`.
   * With it, the service may also set `wsPort`, `wssPort`, `wsPath`, `httpPort`, `httpsPort`
   * and `httpPath` (plain ports and paths only). Without it, an answer setting any of these
   * is refused, unless the value equals the one you pass in `options`. Default: none.
   */
  allowedHosts?: string[];
  /**
   * Take `forceTLS: false` from the service's `client_options` (a server without TLS, e.g.
   * a local sockudo). Default false: such an answer is refused.
   */
  allowNoTLS?: boolean;
  /**
   * Called once a move is complete: every channel live on the new app. Make-before-break
   * while the client's connection works; else (it is down) the client switches at once and
   * each channel recovers what it missed. A failover, or its end, is told to `onFailover` instead.
   */
  onSwitch?: (from: string, to: string) => void;
  /**
   * Called when a move could not be made (the target refused a subscription, did not
   * answer, or pusher-js has no switchCluster): the client stays where it is, and tries
   * again after 30-60 s (pusher-js < 8.4: at the next page load). Also called (with the
   * app the answer named as `to`) when the assignment read after an announcement or a
   * reconnect was refused (see `connect`) on every re-read: the client stays where it is.
   */
  onSwitchFailed?: (from: string, to: string, error: Error) => void;
  /**
   * Called once per failover move, instead of `onSwitch`: the service sent the client to
   * the healthy app (`reason` is the answer's `failover.reason`: `"unhealthy"` for the
   * fleet's decision, `"operator"` for a manual one), or back when the failover ended
   * (`"return"`). Every channel is live on `to` by then (or, off a dead app, after
   * handoverTimeoutMs at most: the client keeps connecting there); the app saw no second
   * `subscription_succeeded`, and recovery delivered what was missed.
   */
  onFailover?: (from: string, to: string, reason: 'unhealthy' | 'operator' | 'return' | (string & {})) => void;
  /**
   * The watchdog on the client's own connection, for a failover the client cannot hear
   * announced (its app is down): when it is suspected, /client-config is re-read (the first
   * read within 1 s at random, then backing off 2 s × 1.5 per read up to 30 s, each
   * ±50 %) until it is healthy again or told another app, and the client moves there:
   * make-before-break while its connection works, else a plain connect followed by
   * recovery of every channel. Default on with the defaults below; `false` turns it off
   * (an announced failover is still followed). The app's own `disconnect()` pauses it
   * until its `connect()`.
   */
  failover?: FailoverLimits | false;
  /**
   * An id per event, for an exact match of the copies that arrive on both apps during a
   * move: each id is then delivered once. Without it, copies are matched by event name
   * and data (an event sent twice on purpose still arrives twice).
   */
  eventId?: (channel: string, event: string, data: unknown) => string;
  /** connect() rejects if the first connection is not made within this (default 20000). */
  connectTimeoutMs?: number;
  /** A move is abandoned (the client stays) if it takes longer than this (default 20000). */
  handoverTimeoutMs?: number;
  /** Defaults to globalThis.fetch. */
  fetch?: typeof fetch;
  /** Defaults to Math.random (the switch is spread over spread_secs, retries are jittered). */
  random?: () => number;
  /**
   * How authorizations refused for load (429, 503, 504), lost by a proxy (502), timed out or failed on the
   * network are retried; `false` turns retrying off. Ignored for an authorization
   * whose options bring their own `customHandler`.
   */
  retry?: RetryLimits | false;
  /**
   * Recovery after a reconnect (and after a move): every channel gets, once and in order,
   * what was published through the service while it was away, or a `RECOVERY_GAP` event
   * saying what could not be had. On once a channel authorization answer carries a
   * recovery token (a service with `[recovery]`); until then, and with a service without
   * it, no request is made. `false` turns it off.
   */
  recovery?: RecoveryOptions | false;
  /**
   * Where `POST /recover/{app}` is, when it is not beside the channel authorization
   * endpoint (`…/auth/NAME` → `…/recover/NAME`): a URL (resolved against configUrl), or a
   * function of the app the client is on.
   */
  recoverEndpoint?: string | ((app: string) => string);
}

export interface FailoverLimits {
  /** Suspect the connection when it has not been 'connected' for this long (default 3000). */
  afterMs?: number;
  /**
   * When connected but nothing came for this long, the helper sends `pusher:ping` (an idle
   * healthy client: at most once per silentMs; default 10000) …
   */
  silentMs?: number;
  /** … and suspects the connection if nothing (not even `pusher:pong`) comes within this (default 5000). */
  pongMs?: number;
}

/** GET /client-config's `failover`: while an app is failed over, every client is sent to `to`. */
export interface FailoverState {
  from: string;
  to: string;
  since_ms: number;
  /** `"unhealthy"`: the fleet's decision; `"operator"`: a manual one. */
  reason: 'unhealthy' | 'operator' | (string & {});
}

export interface RecoveryOptions {
  /**
   * While connected, each channel's position is moved forward this often (default 60000;
   * batched, one request for up to 100 channels), so it stays inside the service's
   * `recovery.window_secs` (default 120): keep it below that window.
   */
  resyncMs?: number;
  /**
   * How long a reconnected channel's live events may wait for its recovery, retries
   * included (default 5000); then they are delivered and the gap is told (`unavailable`).
   */
  maxHoldMs?: number;
  /**
   * Recover before any authorization answer carried a token (an app whose channels are
   * all public). Default false for `connect`, true for `recover`. A 404 from the service
   * turns recovery off.
   */
  always?: boolean;
}

export interface RecoverOptions extends RecoveryOptions {
  /**
   * The service's `POST /recover/{app}` for the app this instance is on. Default: beside
   * `channelAuthorization.endpoint` (or `authEndpoint`), `…/auth/NAME` → `…/recover/NAME`;
   * pusher-js < 8.5 keeps no options to read it from: pass it.
   */
  endpoint?: string;
  /** Sent with each recover request. */
  headers?: Record<string, string>;
  /** Defaults to globalThis.fetch. */
  fetch?: typeof fetch;
  /** Defaults to Math.random (retries are jittered). */
  random?: () => number;
}

/** What `RECOVERY_GAP` carries: the channel, why, and how many events were recovered before it was told. */
export interface RecoveryGap {
  channel: string;
  /**
   * `evicted`: the buffer no longer holds all of it (older than the window, or past its caps);
   * `unknown_position`: the service does not know where the client was (it restarted, memory mode);
   * `buffer_outage`: the buffer could not keep some events (Redis down);
   * `unavailable`: the service did not answer within maxHoldMs (or has no recovery);
   * `missing_token`, `invalid_token`, `expired_token`, `invalid_channel_name`: the service refused the channel.
   */
  reason: 'evicted' | 'unknown_position' | 'buffer_outage' | 'unavailable' | 'missing_token' | 'invalid_token' | 'expired_token' | 'invalid_channel_name' | (string & {});
  recovered: number;
}

/**
 * The event a channel emits when a recovery could not get everything, once per
 * recovery, after what it did recover: `channel.bind(RECOVERY_GAP, (gap: RecoveryGap) => reload())`.
 */
export const RECOVERY_GAP: 'pusher-dual-auth:recovery_gap';

/**
 * Recovery for plain pusher-js (>= 8) without `connect`: call it right after
 * `new Pusher(…)`, before subscribing. It takes each channel's recovery token from its
 * authorization answer (whatever authorizes it; pusher-js never sees the token), and
 * after each reconnect delivers what each channel missed through the channel's own
 * callbacks, or emits `RECOVERY_GAP`. A channel subscribed before the call is authorized
 * once more for its token. Throws if no endpoint is given and none can be derived.
 */
export function recover(pusher: object, options?: RecoverOptions): { stop(): void };

export interface RetryLimits {
  /** Attempts in all, the first included (default 20; a refusal for load costs your host nothing). */
  maxAttempts?: number;
  /** The longest wait between attempts, Retry-After included (default 10000). */
  maxDelayMs?: number;
  /** Stop retrying once this long has passed since the first attempt (default 60000). */
  giveUpAfterMs?: number;
  /** One attempt's time limit (default 10000). */
  timeoutMs?: number;
  /** Told of each retry (for logs or metrics). */
  onRetry?: (info: { attempt: number; delayMs: number; reason: string; endpoint: string }) => void;
}

export interface RetryingAuthOptions extends RetryLimits {
  /** The auth endpoint, or a function giving it at each attempt. */
  endpoint: string | (() => string);
  /** 'channel' (channelAuthorization) or 'user' (userAuthentication); default 'channel'. */
  kind?: 'channel' | 'user';
  /** As pusher-js's own options. */
  headers?: Record<string, string>;
  headersProvider?: () => Record<string, string>;
  params?: Record<string, string | number | boolean>;
  paramsProvider?: () => Record<string, string | number | boolean>;
  /** fetch credentials (default 'same-origin', as pusher-js's XHR). */
  credentials?: RequestCredentials;
  /** Whether `socketId` is still the connection's: a retry for a dead socket is dropped. */
  isCurrent?: (socketId: string) => boolean;
  fetch?: typeof fetch;
  random?: () => number;
}

/** What pusher-js hands a customHandler, and how it is answered. */
export interface AuthRequestParams {
  socketId: string;
  channelName?: string;
}
export type AuthCallback = (error: Error | null, data: Record<string, unknown> | null) => void;

/** What GET /client-config answers (and what `connect` accepts of it). */
export interface ClientConfig {
  app: string;
  key: string;
  /** A cluster name (letters, digits, `-`, `.`): pusher-js puts it in host names. */
  cluster: string;
  /**
   * The app's client_options from the service's config (wsHost, wsPort, forceTLS, …).
   * `connect` takes only: `wsHost`, `httpHost`, `statsHost` listed in `allowedHosts`;
   * `wsPort`, `wssPort`, `httpPort`, `httpsPort` (1-65535) and `wsPath`, `httpPath` ("/…")
   * with `allowedHosts` given; `forceTLS` (false only with `allowNoTLS`); `activityTimeout`,
   * `pongTimeout`, `unavailableTimeout`; `enabledTransports`, `disabledTransports`;
   * `ignoreNullOrigin`; `enableStats: false` / `disableStats: true`; `cluster` (ignored:
   * the answer's own `cluster` is used). A value equal to your own option is always taken.
   * Anything else (auth settings, stats on, unknown keys) refuses the answer.
   */
  client_options: Record<string, unknown>;
  /** A path, or a URL on configUrl's origin or one in `allowedOrigins`. */
  channelAuthorization: { endpoint: string };
  userAuthentication: { endpoint: string };
  /** The rollout target (0-100: the share of clients on `to`). */
  percent: number;
  /** A public channel name (not private- or presence-). */
  control_channel: string;
  version: number;
  /**
   * Set while an app is failed over (every client is sent to the healthy one); else null.
   * Anything but null or `{ from, to, reason }` (strings) refuses the answer.
   */
  failover?: FailoverState | null;
}

/**
 * Creates the Pusher instance the app keeps using; resolves once it is connected, and
 * rejects with a clear error if /client-config fails or is not a client-config answer,
 * or the first connection is not made within connectTimeoutMs. It also rejects, before
 * any Pusher instance or request is made, when the answer is refused ("client-config:
 * refused the answer from URL: FIELD VALUE WHY; …": an auth endpoint off configUrl's
 * origin and `allowedOrigins`, `client_options` that `ClientConfig` does not allow, a
 * cluster or control_channel that is not one), or when `allowedOrigins` / `allowedHosts`
 * hold something that is not an origin / a host name.
 */
export function connect<P>(Pusher: new (key: string, options: object) => P, settings: ConnectOptions): Promise<P>;

/**
 * A pusher-js customHandler that retries authorizations refused for load, for
 * plain pusher-js, laravel-echo and other clients without `connect`.
 */
export function retryingAuth(settings: RetryingAuthOptions): (params: AuthRequestParams, callback: AuthCallback) => void;

/**
 * Merges what several connections receive during a move into one stream: each event
 * once (a deliberate repeat twice), in the primary connection's order. Used by connect;
 * exported for tests.
 */
export class DedupFilter {
  constructor(idOf?: ((event: string, data: unknown) => string) | null, options?: { holdMs?: number });
  offer(source: string, event: string, data: unknown, deliver: () => void): void;
  setPrimary(primary: string, sources: string[]): void;
  flush(): void;
  matched: boolean;
}
