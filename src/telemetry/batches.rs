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
    threads: Mutex<Vec<Arc<Mutex<Batch>>>>,
    queued: AtomicUsize,
    dropped: AtomicU64,
    max_queue: usize,
    max_batch: usize,
    /// Where a thread's batch goes when it is full.
    full: tokio::sync::mpsc::UnboundedSender<Batch>,
}

thread_local! {
    /// This thread's batch, and the `Batches` it belongs to (by address: a test may make several).
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
    // A panic while writing leaves at worst a span cut short; the batch is still sent.
    batch.lock().unwrap_or_else(|e| e.into_inner())
}

impl Batches {
    pub fn new(
        max_queue: usize,
        max_batch: usize,
    ) -> (Arc<Self>, tokio::sync::mpsc::UnboundedReceiver<Batch>) {
        let (full, rx) = tokio::sync::mpsc::unbounded_channel();
        let batches = Self {
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
        let id = self as *const Self as usize;
        MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            if !matches!(&*mine, Some((of, _)) if *of == id) {
                *mine = Some((id, self.register()));
            }
            let Some((_, batch)) = &*mine else { return };
            let mut batch = lock(batch);
            write(&mut batch.bytes);
            batch.spans += 1;
            if batch.spans >= self.max_batch {
                let full = batch.take();
                drop(batch);
                self.hand_over(full);
            }
        });
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

    /// Every thread's batch, taken (the ones with spans), for the timed export and the last flush.
    pub fn sweep(&self) -> Vec<Batch> {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads
            .iter()
            .filter_map(|batch| {
                let mut batch = lock(batch);
                (batch.spans > 0).then(|| batch.take())
            })
            .collect()
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
    fn a_full_batch_with_no_exporter_left_frees_its_room() {
        let (batches, full) = Batches::new(4, 2);
        drop(full);
        (0..6).for_each(|n| batches.push(one_byte(n)));
        assert_eq!(batches.take_dropped(), 0, "lost batches give their room back");
    }
}
