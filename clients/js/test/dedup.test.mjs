// DedupFilter: what two or three connections receive during a handover, merged
// into one stream: each event once, a deliberate repeat twice, in the primary's order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DedupFilter } from '../pusher-dual-auth.mjs';
import { sleep } from './support.mjs';


function harness(opts) {
  const out = [];
  const f = new DedupFilter(opts && opts.idOf, { holdMs: 50 });
  const send = (source, ...ns) => ns.forEach((n) => f.offer(source, 'tick', { n }, () => out.push(n)));
  return { f, out, send };
}

test('an event on both connections is delivered once, in order', () => {
  const { out, send } = harness();
  send('before', 1, 2);
  send('second', 1, 2);
  send('before', 3);
  send('second', 3);
  assert.deepEqual(out, [1, 2, 3]);
});

test('an event sent twice on purpose arrives twice', () => {
  const { out, send } = harness();
  send('before', 7, 7);
  send('second', 7, 7);
  assert.deepEqual(out, [7, 7]);
});

test('the second connection ahead of the primary: held, then the primary\'s order', () => {
  const { out, send } = harness();
  send('second', 1, 2, 3);
  assert.deepEqual(out, [], 'held for the primary');
  send('before', 1);
  send('before', 2, 3);
  assert.deepEqual(out, [1, 2, 3]);
});

test('an event the primary missed takes its place before the next one the primary has', () => {
  const { out, send } = harness();
  send('second', 1, 2, 3);
  send('before', 1, 3); // 2 never reaches the primary
  assert.deepEqual(out, [1, 2, 3]);
});

test('an event on one app only is delivered after the hold', async () => {
  const { out, send } = harness();
  send('before', 1);
  send('second', 2); // published to the new app only
  assert.deepEqual(out, [1]);
  await sleep(80);
  assert.deepEqual(out, [1, 2]);
});

test('at the switch the second connection becomes the primary; the client\'s own new connection is matched against it', () => {
  const { f, out, send } = harness();
  send('before', 1, 2);
  send('second', 1, 2, 3, 4); // 3 and 4 came after the old connection closed
  f.setPrimary('second', ['second', 'after']);
  assert.deepEqual(out, [1, 2, 3, 4], 'what only the second connection had is delivered now');
  send('after', 4, 5); // the client's own instance on the new app: 4 is a copy
  send('second', 5, 6);
  send('after', 6);
  f.flush();
  assert.deepEqual(out, [1, 2, 3, 4, 5, 6]);
});

test('with eventId: once per id, whatever the data', () => {
  const out = [];
  const f = new DedupFilter((e, d) => d.id);
  for (const [source, d] of [['before', { id: 'a', v: 1 }], ['second', { id: 'a', v: 2 }], ['second', { id: 'b' }], ['before', { id: 'b' }]]) {
    f.offer(source, 'x', d, () => out.push(d.id));
  }
  assert.deepEqual(out, ['a', 'b']);
});
