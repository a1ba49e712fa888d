// Step 7, the status page as the operator sees it, for the change request:
// it says drained (when checked), lists both replicas, warns of nothing;
// status.png and status.json go beside the report.
import fs from 'node:fs';
import path from 'node:path';
import * as w from './world.mjs';

/** @param {{ finalViews: object[], checkDrain: boolean }} end  what drain.mjs resolved with */
export default async function statusPage({ finalViews, checkDrain }) {
  const { assert, out, replicas, work } = w;
  const puppeteer = (await import('puppeteer-core')).default;
  const browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', `--user-data-dir=${path.join(work, 'chromium')}`] });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 900 });
    await page.goto(`http://127.0.0.1:${replicas[1].admin}/status.html`);
    await page.waitForSelector('body[data-loaded="yes"]', { timeout: 10000 });
    const shown = await page.evaluate(() => ({
      verdict: document.getElementById('verdict').textContent,
      replicas: [...document.querySelectorAll('#replicas tr')].length,
      warnings: document.getElementById('fleet-warnings').textContent,
    }));
    if (checkDrain) assert(shown.verdict.includes('drained:') && !shown.verdict.includes('not drained'), `the page says drained: ${shown.verdict}`);
    assert(shown.replicas >= 2, `the page lists the replicas (${shown.replicas})`);
    assert(shown.warnings === '', `no fleet warning on the page: ${shown.warnings}`);
    await page.screenshot({ path: path.join(out, 'status.png'), fullPage: true });
  } finally {
    await browser.close();
  }
  fs.writeFileSync(path.join(out, 'status.json'), JSON.stringify(finalViews[0], null, 2));
}
