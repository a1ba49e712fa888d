// retryingAuth with a fake fetch: what is retried, what never is, and how.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { retryingAuth } from '../pusher-dual-auth.mjs';

/** A fetch that answers from `script` in turn ({status, retryAfter?, body?} or an Error to throw). */
function fakeFetch(script) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init });
    const next = script[Math.min(calls.length - 1, script.length - 1)];
    if (next instanceof Error) throw next;
    const headers = new Headers(next.retryAfter === undefined ? {} : { 'retry-after': String(next.retryAfter) });
    return new Response(next.body ?? JSON.stringify({ auth: 'key:sig' }), { status: next.status, headers });
  };
  return { fetch, calls };
}

/** Runs one authorization; resolves with every callback it got (after settling). */
function authorize(settings, params = { socketId: '1.1', channelName: 'private-a' }) {
  return new Promise((resolve) => {
    const answers = [];
    retryingAuth({ random: () => 0, ...settings })(params, (error, data) => {
      answers.push({ error, data });
      setTimeout(() => resolve(answers), 50); // a second callback would show up here
    });
  });
}

test('refusals for load are retried, honouring Retry-After, and answered once', async () => {
  const { fetch, calls } = fakeFetch([{ status: 503, retryAfter: 0 }, { status: 429, retryAfter: 0 }, { status: 200 }]);
  const retries = [];
  const answers = await authorize({ endpoint: 'http://svc/auth/new', fetch, onRetry: (r) => retries.push(r) });
  assert.equal(calls.length, 3);
  assert.deepEqual(answers, [{ error: null, data: { auth: 'key:sig' } }]);
  assert.deepEqual(retries.map((r) => r.reason), ['status 503', 'status 429']);
});

test('Retry-After sets the wait (plus jitter, within the cap)', async () => {
  const { fetch } = fakeFetch([{ status: 503, retryAfter: 2 }, { status: 200 }]);
  const retries = [];
  let jitter = 0.5;
  const start = Date.now();
  await authorize({ endpoint: 'http://svc/a', fetch, random: () => jitter, maxDelayMs: 2600, onRetry: (r) => retries.push(r) });
  assert.equal(retries[0].delayMs, 2500, '2 s + half of a second of jitter');
  assert.ok(Date.now() - start >= 2400);
  jitter = 0;
});

test('a 504, a proxy\'s 502 (a replica restarting), a timeout and a network failure are retried too', async () => {
  const boom = new TypeError('fetch failed');
  const { fetch, calls } = fakeFetch([{ status: 504, retryAfter: 0 }, { status: 502 }, boom, { status: 200 }]);
  const answers = await authorize({ endpoint: 'http://svc/a', fetch, maxDelayMs: 20 });
  assert.equal(calls.length, 4);
  assert.equal(answers[0].error, null);
  const slow = async (url, init) => new Promise((_, reject) => init.signal.addEventListener('abort', () => {
    const e = new Error('aborted'); e.name = 'AbortError'; reject(e);
  }));
  const timedOut = await authorize({ endpoint: 'http://svc/a', fetch: slow, timeoutMs: 20, maxAttempts: 2, maxDelayMs: 10 });
  assert.match(timedOut[0].error.message, /gave up after 2 attempts \(no answer in 20 ms\)/);
});

test('denials and other answers are never retried', async () => {
  for (const status of [401, 403, 400, 404, 413, 500]) {
    const { fetch, calls } = fakeFetch([{ status }, { status: 200 }]);
    const answers = await authorize({ endpoint: 'http://svc/a', fetch });
    assert.equal(calls.length, 1, `status ${status} sent once`);
    assert.equal(answers.length, 1);
    assert.match(answers[0].error.message, new RegExp(`status ${status}`));
  }
  const { fetch } = fakeFetch([{ status: 200, body: 'not json' }]);
  const [answer] = await authorize({ endpoint: 'http://svc/a', fetch });
  assert.match(answer.error.message, /invalid JSON/);
});

test('it gives up with one error after maxAttempts or giveUpAfterMs', async () => {
  const { fetch, calls } = fakeFetch([{ status: 503, retryAfter: 0 }]);
  const answers = await authorize({ endpoint: 'http://svc/a', fetch, maxAttempts: 3, maxDelayMs: 5 });
  assert.equal(calls.length, 3);
  assert.equal(answers.length, 1);
  assert.match(answers[0].error.message, /gave up after 3 attempts \(status 503\)/);
  const slowly = fakeFetch([{ status: 503, retryAfter: 5 }]);
  const [late] = await authorize({ endpoint: 'http://svc/a', fetch: slowly.fetch, giveUpAfterMs: 1000 });
  assert.equal(slowly.calls.length, 1, 'a 5 s Retry-After is past the 1 s budget: no retry');
  assert.match(late.error.message, /gave up after 1 attempts/);
});

test('a retry for a socket that is gone is dropped, without an answer', async () => {
  const { fetch, calls } = fakeFetch([{ status: 503, retryAfter: 0 }, { status: 200 }]);
  let answered = false;
  retryingAuth({ endpoint: 'http://svc/a', fetch, random: () => 0, isCurrent: () => false })(
    { socketId: '1.1', channelName: 'private-a' }, () => { answered = true; });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(calls.length, 1);
  assert.equal(answered, false);
});

test('the endpoint is read at each attempt (the app the client is on now)', async () => {
  const { fetch, calls } = fakeFetch([{ status: 503, retryAfter: 0 }, { status: 200 }]);
  let app = 'old';
  const pending = authorize({ endpoint: () => `http://svc/auth/${app}`, fetch });
  app = 'new';
  await pending;
  assert.deepEqual(calls.map((c) => c.url), ['http://svc/auth/old', 'http://svc/auth/new']);
});

test('the request is what pusher-js sends: a form with socket_id, channel_name, params; headers', async () => {
  const { fetch, calls } = fakeFetch([{ status: 200 }]);
  await authorize({
    endpoint: 'http://svc/a', fetch, headers: { Authorization: 'Bearer t' }, headersProvider: () => ({ 'X-CSRF-Token': 'c' }),
    params: { a: 1 }, paramsProvider: () => ({ b: 'x y' }),
  }, { socketId: '123.456', channelName: 'presence-room;1' });
  const { init } = calls[0];
  assert.equal(init.method, 'POST');
  assert.equal(init.credentials, 'same-origin');
  assert.equal(init.headers['Content-Type'], 'application/x-www-form-urlencoded');
  assert.equal(init.headers.Authorization, 'Bearer t');
  assert.equal(init.headers['X-CSRF-Token'], 'c');
  assert.deepEqual(Object.fromEntries(new URLSearchParams(init.body)), { socket_id: '123.456', channel_name: 'presence-room;1', a: '1', b: 'x y' });
  const user = fakeFetch([{ status: 200 }]);
  await authorize({ endpoint: 'http://svc/a/user', fetch: user.fetch, kind: 'user' }, { socketId: '1.2' });
  assert.equal(user.calls[0].init.body, 'socket_id=1.2', 'sign-in sends no channel_name');
});
