// The report (report.md in --out): the steps as a table, the drain, the auths,
// the events, the webhooks and every client failure; written at the end whether
// the rehearsal passed or not.
import fs from 'node:fs';
import path from 'node:path';
import * as w from './world.mjs';

/**
 * @param {object} r  the report (world.mjs's `report`, filled in by the steps)
 * @param {boolean} failedRun
 */
export default function writeReport(r, failedRun) {
  const { allowances, args, names, out, userConfig } = w;
  const rows = r.steps.map((s) => `| ${s.percent} % | ${s.onNew} of ${r.clients} | ${s.secs.toFixed(1)} s | ${s.auths} | ${s.authRate ? s.authRate.toFixed(1) + '/s' : '–'} | ${s.agreedAfter ? s.agreedAfter.toFixed(1) + ' s' : '–'} | ${s.statusShare !== undefined ? (s.statusShare * 100).toFixed(1) + ' %' : '–'} | ${s.note || ''} |`);
  const text = `# Migration rehearsal: ${failedRun ? '**FAILED**' : 'passed'}

${r.started} → ${r.finished}. ${r.clients} pusher-js clients through the JS helper, each on a private
and a presence channel, every request through nginx (round robin over two replicas sharing
Redis); the host publishing every 250 ms through the fan-out; apps ${userConfig ? `from ${args.config}` : 'old and new on sockudo'}.
The clients' connect() allowances (your app needs the same): allowedHosts ${JSON.stringify(allowances.allowedHosts)}, allowedOrigins ${JSON.stringify(allowances.allowedOrigins)}, allowNoTLS ${allowances.allowNoTLS}.

| step | clients on ${names.to} | all moved and subscribed | auths | auth rate | replicas' /status agreed | ${names.to} share, last 5 min (fleet) | notes |
|---|---|---|---|---|---|---|---|
${rows.join('\n')}

- Old app drained: ${r.drainSkipped ? r.drainSkipped : r.drainedAfter !== undefined ? `quiet for the fleet ${r.quietAfter.toFixed(1)} s after the last client left it; both replicas said "drained" once the ${r.window} s window had passed ("${r.drainReason}")` : 'not reached'}.
- Auth requests: ${r.auths ?? '–'} (${r.refused ?? '–'} refused and retried by the helper, ${r.retries ?? '–'} retries); clients that moved: ${r.moved ?? '–'}.
- Events published: ${r.published ?? '–'} (${r.publishFailures ?? '–'} failed); every client received every event since its first, once, in order: ${r.failures.some((f) => f.includes('events:')) ? 'no' : r.published ? 'yes' : '–'}.
- Last webhook per app (fleet): ${r.lastWebhooks ? Object.entries(r.lastWebhooks).map(([k, v]) => `${k} ${v ? new Date(v).toISOString() : 'never'}`).join(', ') : '–'}.
- Client failures: ${r.failures.length}${r.failures.length ? '\n' + r.failures.slice(0, 30).map((f) => `  - ${f}`).join('\n') : ''}
${r.error ? `\n## Error\n\n\`\`\`\n${r.error}\n\`\`\`\n` : ''}
![status page at the end](status.png)

Final \`/status\`: [status.json](status.json).
`;
  fs.writeFileSync(path.join(out, 'report.md'), text);
}
