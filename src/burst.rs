//! Warning once per burst: the first of a burst is logged at once, the rest
//! only counted, and told (how many) at the next warning, at most every `EVERY`.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

pub const EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Burst(Mutex<(Option<Instant>, u64)>);

impl Burst {
    /// Counts `n` more; `Some(count since the last warning)` when one is due now.
    pub fn hit(&self, n: u64) -> Option<u64> {
        let mut state = self.0.lock().unwrap();
        state.1 += n;
        if state.0.is_some_and(|at| at.elapsed() < EVERY) {
            return None;
        }
        state.0 = Some(Instant::now());
        Some(std::mem::take(&mut state.1))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_burst_warns_once_and_the_next_warning_counts_what_it_held_back() {
        let b = super::Burst::default();
        assert_eq!(b.hit(1), Some(1));
        assert_eq!((b.hit(1), b.hit(5)), (None, None));
        b.0.lock().unwrap().0 = Some(std::time::Instant::now() - super::EVERY);
        assert_eq!(b.hit(1), Some(7));
    }
}
