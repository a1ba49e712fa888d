//! The memory buffer (one replica): per channel, the events published through
//! the fan-out, in order. Each has a position, `<epoch>:<seq>`: `seq` counts
//! every event this process kept, `epoch` is random per process, so a
//! position from before a restart is known to be unknown (a gap), never
//! taken for another event. Pure: the clock is passed in.

use super::config::RecoverySettings;
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    #[serde(skip)]
    pub seq: u64,
    #[serde(skip)]
    pub at_ms: u64,
    #[serde(rename = "event")]
    pub name: String,
    /// As published: the client decodes (or decrypts) it as it does live events.
    pub data: String,
    /// The publisher's `socket_id`: Pusher did not send it to that socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
}

impl Event {
    fn bytes(&self, channel: &str) -> usize {
        channel.len()
            + self.name.len()
            + self.data.len()
            + self.socket_id.as_ref().map_or(0, String::len)
            + 64
    }
}

#[derive(Default)]
struct Channel {
    events: VecDeque<Event>,
    /// The highest seq this channel lost (to the window, the caps): a reader
    /// from before it missed something.
    lost_upto: u64,
    /// When the channel was last written (its record goes a window after).
    last_ms: u64,
}

/// Why a read cannot promise it holds everything since the position.
pub const GAP_UNKNOWN: &str = "unknown_position";
pub const GAP_EVICTED: &str = "evicted";

/// What a reader gets: the events after its position, the position to ask
/// from next time, and whether something in between is gone.
#[derive(Debug, PartialEq)]
pub struct Read {
    pub events: Vec<Event>,
    pub head: u64,
    pub gap: Option<&'static str>,
}

pub struct Buffer {
    epoch: String,
    last: u64,
    channels: HashMap<String, Channel>,
    /// Every kept event in publishing order: the window and the byte cap evict from the front.
    order: VecDeque<(u64, u64, String)>,
    bytes: usize,
    /// The highest seq the window or the byte cap evicted, any channel.
    evicted: u64,
    /// Events dropped before their window ran out (the caps), for the metric.
    pub dropped: u64,
}

impl Buffer {
    pub fn new(epoch: String) -> Self {
        Self {
            epoch,
            last: 0,
            channels: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            evicted: 0,
            dropped: 0,
        }
    }

    pub fn position(&self, seq: u64) -> String {
        format!("{}:{seq}", self.epoch)
    }

    /// The seq of one of this process's positions; None for anything else.
    pub fn parse(&self, position: &str) -> Option<u64> {
        let (epoch, seq) = position.split_once(':')?;
        (epoch == self.epoch).then(|| seq.parse().ok()).flatten().filter(|s| *s <= self.last)
    }

    /// Events and bytes kept.
    pub fn size(&self) -> (usize, usize) {
        (self.order.len(), self.bytes)
    }

    pub fn record(&mut self, channel: &str, mut event: Event, now_ms: u64, limits: &RecoverySettings) -> u64 {
        self.expire(now_ms, limits);
        self.last += 1;
        event.seq = self.last;
        event.at_ms = now_ms;
        self.bytes += event.bytes(channel);
        self.order.push_back((self.last, now_ms, channel.to_owned()));
        let c = self.channels.entry(channel.to_owned()).or_default();
        c.last_ms = now_ms;
        c.events.push_back(event);
        if c.events.len() > limits.max_events_per_channel
            && let Some(old) = c.events.pop_front()
        {
            c.lost_upto = c.lost_upto.max(old.seq);
            self.bytes -= old.bytes(channel);
            self.dropped += 1;
        }
        while self.bytes > limits.max_bytes && self.evict_oldest() {
            self.dropped += 1;
        }
        self.last
    }

    /// Takes back the event kept as `seq` on `channel` (no app took it). Its
    /// position stays valid: a reader who already has it reads on from there.
    pub fn remove(&mut self, channel: &str, seq: u64) {
        let Some(c) = self.channels.get_mut(channel) else { return };
        let Some(i) = c.events.iter().rposition(|e| e.seq == seq) else { return };
        let old = c.events.remove(i).expect("the index was just found");
        self.bytes -= old.bytes(channel);
        if let Some(j) = self.order.iter().rposition(|(s, ..)| *s == seq) {
            self.order.remove(j);
        }
    }

    /// Drops what is older than the window, and the records of channels
    /// written last a window ago.
    pub fn expire(&mut self, now_ms: u64, limits: &RecoverySettings) {
        let cutoff = now_ms.saturating_sub(limits.window.as_millis() as u64);
        while self.order.front().is_some_and(|(_, at, _)| *at < cutoff) && self.evict_oldest() {}
        self.channels.retain(|_, c| !c.events.is_empty() || c.last_ms >= cutoff);
    }

    /// Evicts the oldest kept event (skipping those a channel cap took first).
    fn evict_oldest(&mut self) -> bool {
        let Some((seq, _, channel)) = self.order.pop_front() else { return false };
        self.evicted = self.evicted.max(seq);
        if let Some(c) = self.channels.get_mut(&channel)
            && c.events.front().is_some_and(|e| e.seq == seq)
        {
            let old = c.events.pop_front().expect("the front was just seen");
            c.lost_upto = c.lost_upto.max(seq);
            self.bytes -= old.bytes(&channel);
        }
        true
    }

    /// The events of `channel` after `since` (None: none, only the position to
    /// start from: an anchor).
    pub fn read(&self, channel: &str, since: Option<&str>, limit: usize) -> Read {
        let head = self.last;
        let Some(since) = since else { return Read { events: Vec::new(), head, gap: None } };
        let Some(since) = self.parse(since) else {
            return Read { events: Vec::new(), head, gap: Some(GAP_UNKNOWN) };
        };
        let Some(c) = self.channels.get(channel) else {
            // Nothing kept: either nothing was published since, or all of it is gone.
            let gap = (since < self.evicted).then_some(GAP_EVICTED);
            return Read { events: Vec::new(), head, gap };
        };
        let events: Vec<Event> = c.events.iter().filter(|e| e.seq > since).take(limit).cloned().collect();
        let gap = (since < c.lost_upto).then_some(GAP_EVICTED);
        // A reader given `limit` of more asks again from the last one it got.
        let head = if events.len() == limit { events.last().map_or(head, |e| e.seq) } else { head };
        Read { events, head, gap }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(per_channel: usize, bytes: usize) -> RecoverySettings {
        RecoverySettings {
            window: Duration::from_secs(120),
            max_events_per_channel: per_channel,
            max_bytes: bytes,
            max_channels_per_request: 100,
            token_ttl: Duration::from_secs(3600),
        }
    }

    fn ev(data: &str) -> Event {
        Event { seq: 0, at_ms: 0, name: "e".into(), data: data.into(), socket_id: None }
    }

    fn datas(r: &Read) -> Vec<&str> {
        r.events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn a_reader_gets_what_came_after_its_position_in_order() {
        let (mut b, l) = (Buffer::new("e1".into()), limits(100, 1 << 20));
        let anchor = b.read("c", None, 100);
        b.record("c", ev("1"), 1_000, &l);
        b.record("other", ev("x"), 1_001, &l);
        b.record("c", ev("2"), 1_002, &l);
        let r = b.read("c", Some(&b.position(anchor.head)), 100);
        assert_eq!((datas(&r), r.gap), (vec!["1", "2"], None));
        let again = b.read("c", Some(&b.position(r.head)), 100);
        assert!(again.events.is_empty() && again.gap.is_none());
    }

    #[test]
    fn positions_of_another_process_or_the_future_are_gaps() {
        let (mut b, l) = (Buffer::new("e1".into()), limits(100, 1 << 20));
        b.record("c", ev("1"), 1_000, &l);
        for p in ["e0:0", "e1:99", "e1", "e1:x", ""] {
            assert_eq!(b.read("c", Some(p), 100).gap, Some(GAP_UNKNOWN), "{p}");
        }
    }

    #[test]
    fn what_a_cap_or_the_window_took_is_reported_as_a_gap() {
        let (mut b, l) = (Buffer::new("e".into()), limits(2, 1 << 20));
        let start = b.position(b.read("c", None, 10).head);
        for i in 0..3 {
            b.record("c", ev(&i.to_string()), 1_000 + i, &l);
        }
        let r = b.read("c", Some(&start), 10);
        assert_eq!((datas(&r), r.gap), (vec!["1", "2"], Some(GAP_EVICTED)));
        // The window: two minutes later everything is gone, and said to be.
        b.expire(1_000 + 121_000, &l);
        assert_eq!(b.size(), (0, 0));
        assert_eq!(b.read("c", Some(&start), 10).gap, Some(GAP_EVICTED));
    }

    #[test]
    fn the_byte_cap_evicts_the_oldest_of_any_channel() {
        let (mut b, l) = (Buffer::new("e".into()), limits(100, 1_000));
        let start = b.position(0);
        for i in 0..20 {
            b.record(if i % 2 == 0 { "a" } else { "b" }, ev(&"x".repeat(100)), 1_000 + i, &l);
        }
        assert!(b.size().1 <= 1_000 && b.dropped > 0, "{:?}", b.size());
        assert_eq!(b.read("a", Some(&start), 100).gap, Some(GAP_EVICTED));
    }

    #[test]
    fn an_event_taken_back_is_not_read_and_its_position_stays_valid() {
        let (mut b, l) = (Buffer::new("e".into()), limits(100, 1 << 20));
        let start = b.position(0);
        b.record("c", ev("1"), 1_000, &l);
        let taken = b.record("c", ev("2"), 1_001, &l);
        let seen = b.read("c", Some(&start), 10);
        assert_eq!(datas(&seen), ["1", "2"]);
        b.remove("c", taken);
        assert_eq!((datas(&b.read("c", Some(&start), 10)), b.size().0), (vec!["1"], 1));
        b.record("c", ev("3"), 1_002, &l);
        let after = b.read("c", Some(&b.position(seen.head)), 10);
        assert_eq!((datas(&after), after.gap), (vec!["3"], None));
    }

    #[test]
    fn a_read_is_limited_and_says_where_to_go_on() {
        let (mut b, l) = (Buffer::new("e".into()), limits(100, 1 << 20));
        for i in 0..5 {
            b.record("c", ev(&i.to_string()), 1_000, &l);
        }
        let first = b.read("c", Some(&b.position(0)), 2);
        assert_eq!(datas(&first), ["0", "1"]);
        let rest = b.read("c", Some(&b.position(first.head)), 10);
        assert_eq!(datas(&rest), ["2", "3", "4"]);
    }
}
