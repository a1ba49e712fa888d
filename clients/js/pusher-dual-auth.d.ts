export interface ConnectOptions {
  /** The service's GET /client-config URL (absolute in Node; relative works in browsers). */
  configUrl: string;
  /** Your app's user id (sticky across devices, and the force lists apply); else a cookie id. */
  uid?: string;
  /** Your own pusher-js options (auth headers/params, transports, …): kept across switches. */
  options?: Record<string, unknown>;
  /** Called once a move (make-before-break) is complete: every channel live on the new app. */
  onSwitch?: (from: string, to: string) => void;
  /**
   * Called when a move could not be made (the target refused a subscription, did not
   * answer, or pusher-js has no switchCluster): the client stays where it is, and tries
   * again after 30-60 s (pusher-js < 8.4: at the next page load).
   */
  onSwitchFailed?: (from: string, to: string, error: Error) => void;
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
}

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

/** What GET /client-config answers. */
export interface ClientConfig {
  app: string;
  key: string;
  cluster: string;
  /** The app's client_options from the service's config (wsHost, wsPort, forceTLS, …). */
  client_options: Record<string, unknown>;
  channelAuthorization: { endpoint: string };
  userAuthentication: { endpoint: string };
  /** The rollout target (0-100: the share of clients on `to`). */
  percent: number;
  control_channel: string;
  version: number;
}

/**
 * Creates the Pusher instance the app keeps using; resolves once it is connected, and
 * rejects with a clear error if /client-config fails or is not a client-config answer,
 * or the first connection is not made within connectTimeoutMs.
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
