// Step 1, the fleet: the host app, Redis, sockudo with the built-in pair (unless
// --config), both replicas on the config at 0 %, and nginx in front of them.
import fs from 'node:fs';
import path from 'node:path';
import { startHost } from '../host.mjs';
import * as w from './world.mjs';

export default async function startFleet() {
  const { N, NGINX, SOCKUDO_BIN, builtIn, configPath, here, hostPort, log, nginxConfig, nginxPort, procs, redisPort, replicas,
    run, sockudoConfig, sockudoPort, start, startReplica, userConfig, waitForHttp, withPercent, work, wsPort } = w;
  run.host = await startHost(hostPort, { pageDir: here });
  procs.push(start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { log }));
  if (!userConfig || sockudoPort) {
    fs.writeFileSync(path.join(work, 'sockudo.toml'), sockudoConfig());
    procs.push(start(SOCKUDO_BIN, ['--config', path.join(work, 'sockudo.toml')], { cwd: work, log }));
    for (const a of Object.values(builtIn)) await waitForHttp(`http://127.0.0.1:${wsPort}/up/${a.id}`);
  }
  fs.writeFileSync(configPath, withPercent(0));
  await Promise.all(replicas.map(startReplica));
  fs.writeFileSync(path.join(work, 'nginx.conf'), nginxConfig());
  procs.push(start(process.env.NGINX_BIN || 'nginx', ['-p', work, '-c', path.join(work, 'nginx.conf'), '-g', 'daemon off;'], { log }));
  await waitForHttp(`${NGINX}/pusher/dual-auth/healthz`);
  console.log(`rehearsal: ${N} clients, replicas ${replicas.map((r) => `${r.name} :${r.port} (admin :${r.admin})`).join(', ')}, nginx :${nginxPort}, work dir ${work}`);
}
