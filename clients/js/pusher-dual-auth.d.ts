export interface ConnectOptions {
  /** The service's GET /client-config URL (absolute in Node; relative works in browsers). */
  configUrl: string;
  /** Your app's user id (sticky across devices, and the force lists apply); else a cookie id. */
  uid?: string;
  /** Your own pusher-js options (auth headers/params, transports, …): kept across switches. */
  options?: Record<string, unknown>;
  /** Called after the live connection moved from one app to the other. */
  onSwitch?: (from: string, to: string) => void;
  /** Defaults to globalThis.fetch. */
  fetch?: typeof fetch;
  /** Defaults to Math.random (the switch is spread over spread_secs, retries are jittered). */
  random?: () => number;
  /**
   * How authorizations refused for load (429, 503, 504), timed out or failed on the
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

/** Creates the Pusher instance the app keeps using; resolves once it is connected. */
export function connect(Pusher: new (key: string, options: object) => any, settings: ConnectOptions): Promise<any>;

/**
 * A pusher-js customHandler that retries authorizations refused for load, for
 * plain pusher-js, laravel-echo and other clients without `connect`.
 */
export function retryingAuth(settings: RetryingAuthOptions): (params: AuthRequestParams, callback: AuthCallback) => void;
