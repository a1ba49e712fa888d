// The rehearsal's command line (see ../rehearsal.mjs for the usage): read once,
// on import; a usage error exits 2 before anything is started.
import fs from 'node:fs';
import { parseArgs } from 'node:util';

const USAGE = 'usage: scripts/rehearse [--clients 200] [--dwell 10] [--out DIR] [--config your.toml]\n' +
  '         [--allowed-hosts ws.example.com,…] [--allowed-origins https://auth.example.com,…] [--allow-no-tls]';
export let args;
try {
  ({ values: args } = parseArgs({
    options: { clients: { type: 'string', default: '200' }, dwell: { type: 'string', default: '10' }, out: { type: 'string' },
      config: { type: 'string' }, help: { type: 'boolean' },
      'allowed-hosts': { type: 'string' }, 'allowed-origins': { type: 'string' }, 'allow-no-tls': { type: 'boolean' } },
  }));
} catch (e) {
  console.error(`${e.message}\n${USAGE}`);
  process.exit(2);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const usageError = (message) => {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
};
export const N = Number(args.clients);
if (!Number.isInteger(N) || N < 2) usageError('--clients must be a whole number ≥ 2');
// How long each step holds once every client is where it should be (publishing goes on).
export const DWELL_MS = Number(args.dwell) * 1000;
if (!(DWELL_MS >= 0)) usageError('--dwell is seconds ≥ 0');

// The apps: the built-in pair on sockudo, or the user's config.
export const userConfig = args.config ? fs.readFileSync(args.config, 'utf8') : null;
export const names = userConfig ? rolloutNames(userConfig) : { from: 'old', to: 'new' };
// What the clients pass to connect(), as your app would: the built-in pair's client_options
// (below) send them to sockudo on 127.0.0.1 without TLS, which the helper takes only when allowed.
const commaList = (v) => (v ? v.split(',').map((x) => x.trim()).filter(Boolean) : []);
export const allowances = {
  allowedHosts: [...new Set([...(userConfig ? [] : ['127.0.0.1']), ...commaList(args['allowed-hosts'])])],
  allowedOrigins: commaList(args['allowed-origins']),
  allowNoTLS: !userConfig || Boolean(args['allow-no-tls']),
};

/** [rollout] from/to of a user's config; a config without them cannot be rehearsed. */
function rolloutNames(text) {
  const section = /^\[rollout\]\s*$([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(text);
  if (!section) usageError(`${args.config} has no [rollout] section to rehearse`);
  const field = (k) => (new RegExp(`^\\s*${k}\\s*=\\s*"([^"]+)"`, 'm').exec(section[1]) || [])[1];
  const [from, to] = [field('from'), field('to')];
  if (!from || !to) usageError(`${args.config}: [rollout] needs from = "…" and to = "…"`);
  if (!/^\s*percent\s*=/m.test(section[1])) usageError(`${args.config}: [rollout] needs a percent = … line (the steps rewrite it)`);
  return { from, to };
}
