// The migration runbook as written: the configs of deploy/runbook/, in order,
// reloaded into one running service, with real clients on sockudo at each step.
// A step whose config does not load, or that does not do what the runbook
// (docs/migration.md) promises, fails here.
import { execFileSync } from 'node:child_process';
import * as w from '../world.mjs';

export default async function () {
  const { APPS, HOST_ORIGIN, Pusher, PusherServer, SERVICE_BIN, assert, assertEqual, clients, connect, freePort, fs, path,
    root, sleep, start, stop, suite, waitForHttp, work, wsPort } = w;
  await suite.test('runbook: every step\'s config of deploy/runbook, in order, does what the README says, to the one-app end state', async () => {
    const dir = path.join(work, 'runbook');
    const secrets = path.join(dir, 'secrets');
    fs.mkdirSync(secrets, { recursive: true });
    for (const [file, value] of Object.entries({
      'pusher-old': APPS.old.secret, 'pusher-new': APPS.new.secret, 'pusher-master-key': APPS.old.master,
      publisher: 'runbook-publisher-secret', 'webhook-forward': 'host-webhook-secret',
    })) fs.writeFileSync(path.join(secrets, file), `${value}\n`);
    const [port, admin] = [await freePort(), await freePort()];
    const SERVICE = `http://127.0.0.1:${port}`;
    const vars = {
      LISTEN: `127.0.0.1:${port}`, ADMIN_LISTEN: `127.0.0.1:${admin}`, PROXY_ADDRESS: '127.0.0.1',
      SESSION_CHECK_URL: `${HOST_ORIGIN}/check`, SECRETS_DIR: secrets,
      OLD_APP_ID: APPS.old.id, OLD_KEY: APPS.old.key, OLD_CLUSTER: 'mt1',
      NEW_APP_ID: APPS.new.id, NEW_KEY: APPS.new.key, NEW_CLUSTER: 'eu',
      PUBLISH_APP_ID: 'runbook', PUBLISH_KEY: 'runbook-publisher',
      WEBHOOK_FORWARD_URL: `${HOST_ORIGIN}/pusher/webhook`, WEBHOOK_KEY: 'host-webhook-key',
    };
    const used = new Set();
    // A step's file as written, filled in; the test's own additions only at anchors that must exist.
    const step = (file, { percent } = {}) => {
      let text = fs.readFileSync(path.join(root, 'deploy/runbook', file), 'utf8');
      text = text.replace(/\$\{([A-Z_]+)\}/g, (_, name) => {
        assert(name in vars, `${file}: unknown placeholder \${${name}}`);
        used.add(name);
        return vars[name];
      });
      // This suite's Pusher server is sockudo, not the cluster's hosts.
      for (const app of ['old', 'new']) {
        if (!text.includes(`[apps.${app}]`)) continue;
        text = text.replace(`[apps.${app}]\n`, `[apps.${app}]\nrest_url = "http://127.0.0.1:${wsPort}"\n`);
      }
      if (text.includes('[rollout]')) {
        text = text.replace('[rollout]\n', '[rollout]\nspread_secs = 2\n'); // 30 s by default: too slow for a test
      }
      if (percent !== undefined) {
        assert(/^percent = 0 /m.test(text), `${file} has the "percent = 0" line step 6 edits`);
        text = text.replace(/^percent = 0 /m, `percent = ${percent} `);
      }
      const out = path.join(dir, `${file}.filled.toml`);
      fs.writeFileSync(out, text);
      execFileSync(SERVICE_BIN, ['check-config', '--config', out], { stdio: 'pipe' }); // throws on a refusal
      return text;
    };
    const configPath = path.join(dir, 'service.toml');
    const metric = async (line) => {
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      const found = text.split('\n').find((l) => l.startsWith(line));
      return found ? Number(found.split(' ').pop()) : 0;
    };
    const reloads = () => metric('pusher_auth_config_reloads_total{result="success"}');
    const apply = async (text) => {
      const before = await reloads();
      fs.writeFileSync(configPath, text);
      const until = Date.now() + 15000;
      while ((await reloads()) <= before) {
        assert(Date.now() < until, 'the service reloaded the step\'s config');
        await sleep(100);
      }
      assertEqual(await metric('pusher_auth_config_last_reload_successful'), 1, 'the reload was accepted');
    };
    const auth = (app, channel) => fetch(`${SERVICE}/auth/${app}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Bearer alice' },
      body: `socket_id=1234.1234&channel_name=${channel}`,
    });
    const waitFor = async (what, ok, ms) => {
      const until = Date.now() + ms;
      while (!(await ok())) {
        assert(Date.now() < until, `timed out: ${what}`);
        await sleep(100);
      }
    };

    // Step 2: deploy beside the backend: both apps sign, each with its own key.
    fs.writeFileSync(configPath, step('1-dual-auth.toml'));
    const log = fs.createWriteStream(path.join(dir, 'service.log'));
    const service = start(SERVICE_BIN, ['serve', '--config', configPath], { log, env: { RUST_LOG: 'info' } });
    try {
      await waitForHttp(`${SERVICE}/readyz`);
      for (const app of ['old', 'new']) {
        const res = await auth(app, 'private-runbook');
        assertEqual(res.status, 200, `step 2: /auth/${app} signs`);
        assertEqual((await res.json()).auth.split(':')[0], APPS[app].key, `step 2: ${app}'s key`);
      }
      assertEqual((await fetch(`${SERVICE}/apps/runbook/events`, { method: 'POST' })).status, 404, 'no publishing yet');

      // Step 3: publishing goes to both apps through the official SDK pointed here.
      await apply(step('2-publish.toml'));
      const direct = (app) => {
        const p = new Pusher(APPS[app].key, {
          wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true, cluster: 'mt1',
          channelAuthorization: { endpoint: `${SERVICE}/auth/${app}`, transport: 'ajax', headers: { Authorization: 'Bearer alice' } },
        });
        clients.push(p);
        return p;
      };
      const got = {};
      for (const app of ['old', 'new']) {
        const ch = direct(app).subscribe('private-runbook');
        await new Promise((resolve, reject) => {
          ch.bind('pusher:subscription_succeeded', resolve);
          ch.bind('pusher:subscription_error', (e) => reject(new Error(`step 3: ${app} subscription: ${JSON.stringify(e)}`)));
        });
        got[app] = [];
        ch.bind('published', (d) => got[app].push(d.n));
      }
      const publisher = new PusherServer({
        appId: 'runbook', key: 'runbook-publisher', secret: 'runbook-publisher-secret',
        host: '127.0.0.1', port, useTLS: false,
      });
      await publisher.trigger('private-runbook', 'published', { n: 1 });
      await waitFor('step 3: the event on both apps', () => got.old.length === 1 && got.new.length === 1, 5000);

      // Step 4: webhooks from both apps are received before any client moves.
      assertEqual((await fetch(`${SERVICE}/webhooks`, { method: 'POST' })).status, 404, 'no webhooks yet');
      await apply(step('3-webhooks.toml'));
      const body = JSON.stringify({ time_ms: Date.now(), events: [{ name: 'channel_occupied', channel: 'private-runbook-hook' }] });
      const { createHmac } = await import('node:crypto');
      const webhook = await fetch(`${SERVICE}/webhooks`, {
        method: 'POST', body,
        headers: { 'content-type': 'application/json', 'x-pusher-key': APPS.old.key,
          'x-pusher-signature': createHmac('sha256', APPS.old.secret).update(body).digest('hex') },
      });
      assertEqual(webhook.status, 200, 'step 4: a webhook from the old app is taken');
      const status = async () => (await fetch(`http://127.0.0.1:${admin}/status`)).json();
      assertEqual((await status()).drain.app, 'old', 'step 4: the status page watches the old app');

      // Steps 5-6: the helper build ships at 0 %, then clients move 1 → 10 → 50 → 100 %.
      await apply(step('4-rollout.toml'));
      const helpers = [];
      for (let i = 0; i < 8; i++) {
        const pusher = await connect(Pusher, {
          configUrl: `${SERVICE}/client-config`, uid: `runbook-${i}`,
          options: { wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
            channelAuthorization: { transport: 'ajax', headers: { Authorization: 'Bearer alice' } } },
        });
        clients.push(pusher);
        helpers.push({ pusher, channel: pusher.subscribe('private-runbook-helper') });
      }
      const onNew = () => helpers.filter((h) => h.pusher.key === APPS.new.key).length;
      const allSubscribed = () => helpers.every((h) => h.channel.subscribed);
      await waitFor('step 5: helpers subscribed', allSubscribed, 10000);
      assertEqual(onNew(), 0, 'step 5: at 0 % nobody moves');
      for (const percent of [1, 10, 50, 100]) {
        await apply(step('4-rollout.toml', { percent }));
        const expected = [];
        for (let i = 0; i < helpers.length; i++) {
          expected.push((await (await fetch(`${SERVICE}/client-config?uid=runbook-${i}`)).json()).app);
        }
        const want = expected.filter((a) => a === 'new').length;
        await waitFor(`step 6: ${want} helpers on new at ${percent} %`, () => onNew() === want, 10000);
        await waitFor(`step 6: all subscribed at ${percent} %`, allSubscribed, 10000);
      }
      assertEqual(onNew(), helpers.length, 'step 6: at 100 % everyone is on new');

      // Step 8: the old app removed; the helper build keeps working, and new ones connect.
      await apply(step('5-one-app.toml'));
      assertEqual((await auth('old', 'private-runbook')).status, 404, 'step 8: /auth/old is gone');
      assertEqual((await auth('new', 'private-runbook')).status, 200, 'step 8: /auth/new signs');
      for (const uid of ['runbook-0', 'someone-new']) {
        assertEqual((await (await fetch(`${SERVICE}/client-config?uid=${uid}`)).json()).app, 'new', `step 8: ${uid} told new`);
      }
      const late = await connect(Pusher, {
        configUrl: `${SERVICE}/client-config`, uid: 'after-the-move',
        options: { wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
          channelAuthorization: { transport: 'ajax', headers: { Authorization: 'Bearer alice' } } },
      });
      clients.push(late);
      const lateChannel = late.subscribe('private-runbook-helper');
      await waitFor('step 8: a helper connecting after the move subscribes', () => lateChannel.subscribed, 10000);
      assertEqual(late.key, APPS.new.key, 'step 8: on new');
      await sleep(3000); // the end state's announcement and the spread: nobody moves, nobody drops
      assertEqual(onNew(), helpers.length, 'step 8: the helpers stay on new');
      assert(allSubscribed(), 'step 8: and stay subscribed');
      await publisher.trigger('private-runbook', 'published', { n: 2 });
      await waitFor('step 8: publishing reaches the new app', () => got.new.length === 2, 5000);
      assertEqual(got.old.length, 1, 'step 8: nothing is published to the old app');
      for (const name of Object.keys(vars)) assert(used.has(name), `placeholder \${${name}} appears in a runbook file`);
    } finally {
      await stop(service);
    }
  }, 150000);
}
