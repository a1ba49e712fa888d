// Step 5, the end: publishing stops, and the old app is drained as both replicas
// say (webhooks from both apps, the REST list). With your own apps (--config)
// their webhooks go to your production URL and other clients may hold the old
// app: the drain is not the rehearsal's to check (REHEARSAL_EXPECT_DRAIN=1 does).
import * as w from './world.mjs';

/** Resolves with both replicas' final /status, whether the drain was checked, and each app's last webhook. */
export default async function drained() {
  const { agreed, assert, names, report, run, sleep, userConfig } = w;
  clearInterval(run.publishing);
  run.publishing = null;
  const checkDrain = !userConfig || process.env.REHEARSAL_EXPECT_DRAIN === '1';
  const drainStarted = Date.now();
  const finalViews = await agreed(checkDrain ? 'old app drained' : 'the end', (s) => !checkDrain || s.drain.drained, 90000);
  const lastWebhooks = Object.fromEntries(Object.entries(finalViews[0].apps).map(([k, a]) => [k, a.last_webhook_ms]));
  if (checkDrain) {
    report.drainedAfter = (Date.now() - drainStarted) / 1000;
    // When the old app fell quiet for the fleet, after the last client left it (the verdict follows one window later).
    report.quietAfter = (finalViews[0].drain.quiet_since_ms - report.lastMoveMs) / 1000;
    report.window = finalViews[0].drain.window_secs;
    report.drainReason = finalViews[0].drain.reason;
    for (const app of [names.from, names.to]) assert(lastWebhooks[app], `a webhook from ${app} was seen by the fleet`);
  } else {
    report.drainSkipped = `not checked: your apps' webhooks go to your own URL (the fleet says: "${finalViews[0].drain.reason}")`;
  }
  await sleep(1000); // the last ticks arrive
  return { finalViews, checkDrain, lastWebhooks };
}
