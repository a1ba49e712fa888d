// Step 3, publishing: the host publishes a numbered event through the fan-out
// every 250 ms, from now to the end; both replicas agree at 0 %.
import * as w from './world.mjs';

export default async function startPublishing() {
  const { N, PusherServer, agreed, countsMatch, nginxPort, report, run } = w;
  const publisher = new PusherServer({ appId: 'rehearsal', key: 'rehearsal-publisher-key', secret: 'rehearsal-publisher-secret', host: '127.0.0.1', port: nginxPort, useTLS: false });
  run.publishing = setInterval(() => {
    const n = ++run.published;
    const t = Date.now();
    publisher.trigger('private-rehearsal', 'tick', { n }).then(
      (res) => run.publishLog.push([n, t, Date.now(), res.status]),
      (e) => { run.publishFailures++; run.publishLog.push([n, t, Date.now(), String(e)]); });
  }, 250);
  await agreed('0 %', (s) => s.rollout.percent === 0 && countsMatch(s) && s.fleet.replicas.filter((r) => r.live).length === 2);
  report.steps.push({ percent: 0, secs: report.connectSecs, onNew: 0, auths: run.auths, note: `${N} clients connected and subscribed` });
}
