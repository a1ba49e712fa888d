// Step 6, every client: no failure, and every event published since its first
// one, once, in order. Failures go to the report (a client that lost or repeated
// an event has its trace written to the work dir); the counts too.
import fs from 'node:fs';
import path from 'node:path';
import * as w from './world.mjs';

/** @param {object} lastWebhooks  app → the fleet's last webhook from it (drain.mjs) */
export default function checkClients(lastWebhooks) {
  const { clients, report, run, work } = w;
  for (const c of clients) {
    const firstN = c.events[0];
    const want = firstN === undefined ? [] : Array.from({ length: run.published - firstN + 1 }, (_, k) => firstN + k);
    if (JSON.stringify(c.events) !== JSON.stringify(want)) {
      const missing = want.filter((n) => !c.events.includes(n));
      c.failures.push(`events: ${c.events.length} received, ${missing.length} missing (${missing.slice(0, 5).join(',')}), ${c.events.length - new Set(c.events).size} repeated`);
      fs.writeFileSync(path.join(work, `trace-${c.uid}.json`), JSON.stringify(c.trace));
    }
    if (firstN === undefined || firstN > 8) c.failures.push(`first event ${firstN}: subscribed late`);
    report.failures.push(...c.failures.map((f) => `${c.uid}: ${f}`));
  }
  const { auths, refused, retries, published, publishFailures } = run;
  Object.assign(report, { auths, refused, retries, published, publishFailures, lastWebhooks });
  fs.writeFileSync(path.join(work, 'published.json'), JSON.stringify(run.publishLog));
  report.moved = clients.filter((c) => c.switches.length > 0).length;
}
