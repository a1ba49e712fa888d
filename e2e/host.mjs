// The "host app" of the e2e suite: its session check, and the page the browser test loads.
//
// Session rule: a bearer token or a `session` cookie names the user. alice and bob
// (and rehearsal-<n>) are known; mallory is known but banned (403); anyone else is 401. Channels whose
// name contains "denied" are refused to everyone. /check-slow is the same check
// taking 0.5 s, and counts how many it answers at once (a storm's peak).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

export const USERS = {
  alice: { user_id: 'alice', user_info: { name: 'Alice' }, watchlist: ['bob'] },
  bob: { user_id: 'bob', user_info: { name: 'Bob' } },
};

export function startHost(port, { pageDir }) {
  const calls = [];
  const webhooks = []; // { headers, rawBody } as the host's webhook endpoint received them
  const slow = { inFlight: 0, peak: 0, calls: [] };
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/pusher/webhook') {
        webhooks.push({ headers: req.headers, rawBody: body });
        return send(res, 200, {});
      }
      if (req.method === 'POST' && req.url === '/check-slow') {
        slow.inFlight++;
        slow.peak = Math.max(slow.peak, slow.inFlight);
        slow.calls.push(JSON.parse(body));
        // In flight until answered, or until the service gives up on it (its timeout closes the connection).
        let done = false;
        const finish = () => {
          if (!done) slow.inFlight--;
          done = true;
        };
        res.on('close', finish);
        return setTimeout(() => {
          if (done) return;
          finish();
          answerCheck(req, body, res, []);
        }, 500);
      }
      if (req.method === 'POST' && req.url === '/check') {
        return answerCheck(req, body, res, calls);
      }

      const file = { '/page.html': 'page.html', '/rollout.html': 'rollout.html', '/pusher-dual-auth.mjs': '../clients/js/pusher-dual-auth.mjs', '/pusher.js': 'node_modules/pusher-js/dist/web/pusher-with-encryption.js' }[
        req.url.split('?')[0]
      ];
      if (req.method === 'GET' && file) {
        const type = file.endsWith('.html') ? 'text/html' : 'application/javascript';
        res.writeHead(200, { 'content-type': type });
        return res.end(fs.readFileSync(path.join(pageDir, file)));
      }
      send(res, 404, {});
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve({ server, calls, webhooks, slow })));
}

function answerCheck(req, body, res, calls) {
  const check = JSON.parse(body);
  const bearer = (req.headers.authorization || '').replace(/^Bearer /, '');
  const cookie = /(?:^|;\s*)session=([^;]+)/.exec(req.headers.cookie || '');
  const token = bearer || (cookie && cookie[1]) || '';
  calls.push({ ...check, token, requestId: req.headers['x-request-id'], xff: req.headers['x-forwarded-for'] });
  // The one line a host adds so the service keeps its connections alive: echo the check's id.
  if (req.headers['x-check-id']) res.setHeader('x-check-id', req.headers['x-check-id']);
  if (token === 'mallory' || (check.channel_name || '').includes('denied')) return send(res, 403, {});
  // The rehearsal's many users: token rehearsal-<n> is user rehearsal-<n>.
  const user = USERS[token] || (/^rehearsal-[0-9]+$/.test(token) ? { user_id: token, user_info: { name: token } } : null);
  if (!user) return send(res, 401, {});
  return send(res, 200, user);
}

function send(res, status, json) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(json));
}
