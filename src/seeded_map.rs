//! The hash map for what every authorization looks up: foldhash, seeded per
//! process, where std's SipHash cost ~2.1k instructions per authorization
//! (the session checks in flight, the client-version counts:
//! docs/performance.md#instructions). Seeded, because the keys hold what a
//! client sends (its cookie, its version string): a hash it could aim
//! collisions at would let it slow every lookup.

pub type SeededMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
