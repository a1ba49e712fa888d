// What the helper's tests share: waiting, and the event emitter pusher-js's
// connection and channels are (bind, unbind, emit). Each test file builds its
// own fake pusher-js on these.
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `ok()` holds, failing after `ms`. */
export async function until(ok, ms = 3000) {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(5);
  }
}

export class Emitter {
  constructor() { this.handlers = new Map(); }
  bind(event, fn) { (this.handlers.get(event) || this.handlers.set(event, []).get(event)).push(fn); }
  unbind(event, fn) { this.handlers.set(event, (this.handlers.get(event) || []).filter((f) => f !== fn)); }
  emit(event, data) { for (const fn of [...(this.handlers.get(event) || [])]) fn(data); }
}

/**
 * pusher-js's connection as the helper sees it: a state, changed with
 * 'state_change' ({ previous, current }) first and then the state's own event,
 * and 'message' for every message (pusher:pong included).
 */
export class FakeConnection extends Emitter {
  constructor() {
    super();
    this.state = 'initialized';
    this.socket_id = undefined;
  }
  setState(current) {
    const previous = this.state;
    if (previous === current) return;
    this.state = current;
    this.emit('state_change', { previous, current });
    this.emit(current);
  }
}

/** pusher-js's presence members (`channel.members`): reset when the connection goes, set at subscription. */
export class FakeMembers {
  constructor() { this.reset(); }
  reset() { this.members = {}; this.count = 0; }
  set(list) { this.members = { ...list }; this.count = Object.keys(list).length; }
  each(fn) { for (const [id, info] of Object.entries(this.members)) fn({ id, info }); }
}
