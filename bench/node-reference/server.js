// Reference implementation of pusher-dual-auth's job, written the way a team
// would in their Node backend: Express, the official `pusher` SDK, undici with
// keep-alive for the session check, 2 cluster workers. For benchmarks only.
//   PORT=8090 CHECK_URL=http://127.0.0.1:8091/check node server.js
const cluster = require('node:cluster');

const WORKERS = Number(process.env.WORKERS || 2);
if (cluster.isPrimary) {
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('exit', (w, code) => code && console.error(`worker ${w.process.pid} exited ${code}`));
} else {
  const express = require('express');
  const Pusher = require('pusher');
  const { Agent, request } = require('undici');

  const agent = new Agent({ keepAliveTimeout: 60_000, connections: 128 });
  const apps = {
    old: new Pusher({ appId: '1111', key: 'old-app-key', secret: 'old-app-secret', cluster: 'mt1' }),
    new: new Pusher({ appId: '2222', key: 'new-app-key', secret: 'new-app-secret', cluster: 'eu' }),
  };
  const app = express();
  app.disable('x-powered-by');
  app.use(express.urlencoded({ extended: false, limit: '8kb' }));

  app.post('/auth/:app', async (req, res) => {
    const pusher = apps[req.params.app];
    if (!pusher) return res.status(404).json({ error: 'unknown app' });
    const { socket_id, channel_name } = req.body;
    try {
      const r = await request(process.env.CHECK_URL, {
        method: 'POST',
        dispatcher: agent,
        headersTimeout: 2000,
        bodyTimeout: 2000,
        headers: { 'content-type': 'application/json', cookie: req.headers.cookie || '' },
        body: JSON.stringify({ app: req.params.app, kind: 'channel', socket_id, channel_name, params: {} }),
      });
      if (r.statusCode !== 200) {
        await r.body.dump();
        return res.status(r.statusCode === 401 || r.statusCode === 403 ? 403 : 502).json({ error: 'denied' });
      }
      const who = await r.body.json();
      const auth = channel_name.startsWith('presence-')
        ? pusher.authorizeChannel(socket_id, channel_name, { user_id: who.user_id, user_info: who.user_info })
        : pusher.authorizeChannel(socket_id, channel_name);
      res.json(auth);
    } catch (e) {
      res.status(400).json({ error: String(e.message || e) });
    }
  });
  app.listen(Number(process.env.PORT || 8090), '127.0.0.1');
}
