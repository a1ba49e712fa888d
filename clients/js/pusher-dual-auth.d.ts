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
  /** Defaults to Math.random (the switch is spread over spread_secs). */
  random?: () => number;
}

/** Creates the Pusher instance the app keeps using; resolves once it is connected. */
export function connect(Pusher: new (key: string, options: object) => any, settings: ConnectOptions): Promise<any>;
