//! Ended spans wait for export in a batch of the thread that ended them,
//! already written as protobuf (`otlp_body::span`). Ending a span takes that
//! thread's own lock (contended only by the export thread's sweep, once a
//! second) and appends its bytes: no span moves between threads, and nothing a
//! worker allocates is freed on the export thread but a full batch's one
//! buffer. (The SDK's batch processor took each span through a channel as
//! `SpanData` and freed its parts on its own thread: docs/performance.md#tracing.)
//!
//! Bounded: at most `max_queue` spans wait (in batches, or handed to the
//! exporter and not yet sent); a span past that is dropped and counted, never
//! waited for.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// Spans written one after another, and how many.
#[derive(Default, Debug)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub spans: usize,
}

pub struct Batches {
    /// Which `Batches` a thread's batch belongs to (a test makes several, one after another).
    id: usize,
    threads: Mutex<Vec<Arc<Mutex<Batch>>>>,
    queued: AtomicUsize,
    dropped: AtomicU64,
    max_queue: usize,
    max_batch: usize,
    /// Where a thread's batch goes when it is full.
    full: tokio::sync::mpsc::UnboundedSender<Batch>,
}

thread_local! {
    /// This thread's batch, and the `Batches` it belongs to (by its `id`).
    static MINE: RefCell<Option<(usize, Arc<Mutex<Batch>>)>> = const { RefCell::new(None) };
}

impl Batch {
    /// The spans, leaving a buffer as large for the next (not grown again by doubling, copied each time).
    fn take(&mut self) -> Batch {
        let capacity = self.bytes.capacity();
        let bytes = std::mem::replace(&mut self.bytes, Vec::with_capacity(capacity));
        Batch { bytes, spans: std::mem::take(&mut self.spans) }
    }
}

fn lock(batch: &Mutex<Batch>) -> MutexGuard<'_, Batch> {
    // A span whose writing panicked is cut off before the lock is let go (`push`).
    batch.lock().unwrap_or_else(|e| e.into_inner())
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl Batches {
    pub fn new(
        max_queue: usize,
        max_batch: usize,
    ) -> (Arc<Self>, tokio::sync::mpsc::UnboundedReceiver<Batch>) {
        let (full, rx) = tokio::sync::mpsc::unbounded_channel();
        let batches = Self {
            id: NEXT_ID.fetch_add(1, Relaxed),
            threads: Mutex::default(),
            queued: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            max_queue,
            max_batch: max_batch.max(1),
            full,
        };
        (Arc::new(batches), rx)
    }

    /// Appends a span (`write` writes it) to this thread's batch, or drops it if
    /// `max_queue` spans are waiting. A batch that reaches `max_batch` spans goes
    /// to the exporter at once.
    pub fn push(&self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.queued.fetch_add(1, Relaxed) >= self.max_queue {
            self.queued.fetch_sub(1, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let pushed = MINE.try_with(|mine| {
            let mut mine = mine.borrow_mut();
            if !matches!(&*mine, Some((of, _)) if *of == self.id) {
                *mine = Some((self.id, self.register()));
            }
            let Some((_, batch)) = &*mine else { return };
            let mut batch = lock(batch);
            // A span cut short by a panic would make the whole body invalid: it is
            // taken out again, and its room given back, before the panic goes on.
            let before = batch.bytes.len();
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&mut batch.bytes)));
            if let Err(panic) = written {
                batch.bytes.truncate(before);
                drop(batch);
                self.sent(1);
                std::panic::resume_unwind(panic);
            }
            batch.spans += 1;
            if batch.spans >= self.max_batch {
                let full = batch.take();
                drop(batch);
                self.hand_over(full);
            }
        });
        if pushed.is_err() {
            // This thread is exiting (its batch is gone): counted as dropped.
            self.sent(1);
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    fn register(&self) -> Arc<Mutex<Batch>> {
        let batch = Arc::new(Mutex::new(Batch::default()));
        self.threads.lock().unwrap_or_else(|e| e.into_inner()).push(batch.clone());
        batch
    }

    fn hand_over(&self, batch: Batch) {
        if let Err(lost) = self.full.send(batch) {
            // The exporter is gone (shutting down): these will never be sent.
            self.sent(lost.0.spans);
        }
    }

    /// Every thread's batch, taken (the ones with spans), for the timed export and
    /// the last flush. A thread that has ended is let go once its batch is taken.
    pub fn sweep(&self) -> Vec<Batch> {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let taken = threads
            .iter()
            .filter_map(|batch| {
                let mut batch = lock(batch);
                (batch.spans > 0).then(|| batch.take())
            })
            .collect();
        // Held by the list alone: its thread's `MINE` is gone.
        threads.retain(|batch| Arc::strong_count(batch) > 1);
        taken
    }

    /// `spans` are sent (or given up): room for as many more.
    pub fn sent(&self, spans: usize) {
        self.queued.fetch_sub(spans, Relaxed);
    }

    /// The spans dropped since the last call (the queue was full).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Relaxed)
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_byte(n: u8) -> impl FnOnce(&mut Vec<u8>) {
        move |b| b.push(n)
    }

    #[test]
    fn spans_from_several_threads_are_all_swept_or_handed_over_in_full_batches() {
        let (batches, mut full) = Batches::new(1000, 4);
        std::thread::scope(|s| {
            for t in 0..3_u8 {
                let batches = &batches;
                s.spawn(move || (0..10).for_each(|_| batches.push(one_byte(t))));
            }
        });
        let mut seen = Vec::new();
        while let Ok(batch) = full.try_recv() {
            assert_eq!((batch.spans, batch.bytes.len()), (4, 4), "a full batch is max_batch spans");
            seen.extend(batch.bytes);
        }
        let swept = batches.sweep();
        assert_eq!(swept.len(), 3, "each thread's remainder (10 = 2 x 4 + 2)");
        for batch in swept {
            assert_eq!(batch.spans, 2);
            assert!(batch.bytes.iter().all(|&b| b == batch.bytes[0]), "a batch is one thread's");
            seen.extend(batch.bytes);
        }
        seen.sort_unstable();
        assert_eq!(seen, [[0_u8; 10], [1; 10], [2; 10]].concat());
        assert!(batches.sweep().is_empty(), "a sweep takes what it finds");
    }

    #[test]
    fn past_max_queue_spans_are_dropped_and_counted_until_some_are_sent() {
        let (batches, _full) = Batches::new(5, 100);
        (0..8).for_each(|n| batches.push(one_byte(n)));
        assert_eq!(batches.take_dropped(), 3);
        assert_eq!(batches.take_dropped(), 0, "counted once");
        let swept = batches.sweep();
        assert_eq!(swept[0].bytes, [0, 1, 2, 3, 4]);
        batches.push(one_byte(9));
        assert_eq!(batches.take_dropped(), 1, "swept but not yet sent still counts");
        batches.sent(5);
        batches.push(one_byte(10));
        assert_eq!(batches.take_dropped(), 0);
        assert_eq!(batches.sweep()[0].bytes, [10]);
    }

    #[test]
    fn a_span_whose_writing_panics_is_cut_off_and_gives_its_room_back() {
        let (batches, _full) = Batches::new(2, 100);
        batches.push(|b| b.extend_from_slice(&[0x12, 3, 1, 2, 3]));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batches.push(|b| {
                b.extend_from_slice(&[0x12, 100]);
                panic!("cut short")
            })
        }));
        assert!(panicked.is_err(), "the panic goes on");
        batches.push(|b| b.push(9));
        assert_eq!(batches.take_dropped(), 0, "the panicked span's room was given back");
        let swept = batches.sweep();
        assert_eq!((swept[0].spans, swept[0].bytes.as_slice()), (2, &[0x12, 3, 1, 2, 3, 9][..]));
    }

    #[test]
    fn a_new_batches_never_writes_into_an_old_ones_batch() {
        for _ in 0..20 {
            let (old, rx) = Batches::new(10, 100);
            old.push(one_byte(1));
            drop((old, rx));
            let (new, _rx) = Batches::new(10, 100);
            new.push(one_byte(2));
            assert_eq!(new.sweep()[0].bytes, [2], "the span went to a batch of the old one");
        }
    }

    #[test]
    fn a_thread_that_has_ended_is_let_go_once_its_batch_is_swept() {
        let (batches, _full) = Batches::new(100, 100);
        // Joined natively: the thread's locals (its `MINE`) are gone by then.
        let theirs = batches.clone();
        std::thread::spawn(move || theirs.push(one_byte(7))).join().unwrap();
        batches.push(one_byte(8));
        assert_eq!(batches.threads.lock().unwrap().len(), 2);
        let mut swept: Vec<u8> = batches.sweep().into_iter().flat_map(|b| b.bytes).collect();
        swept.sort_unstable();
        assert_eq!(swept, [7, 8], "the ended thread's span is still sent");
        assert_eq!(batches.threads.lock().unwrap().len(), 1, "this thread's batch stays");
    }

    #[test]
    fn a_full_batch_with_no_exporter_left_frees_its_room() {
        let (batches, full) = Batches::new(4, 2);
        drop(full);
        (0..6).for_each(|n| batches.push(one_byte(n)));
        assert_eq!(batches.take_dropped(), 0, "lost batches give their room back");
    }
}
