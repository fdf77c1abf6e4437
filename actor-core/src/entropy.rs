//! Where the runtime's randomness and process-wide numbering come from.
//!
//! In production every random number (a node's run, a handle's key, the
//! membership protocol's choices, the keys of every hash map) comes from
//! the operating system's randomness, and ids come from process-wide
//! counters. Inside [`seeded`] on the current thread they all come from one
//! seed instead, so that a whole multi-node application run on a
//! single-threaded runtime with virtual time (the `actor-sim` testkit) does
//! the same thing every time it is given the same seed. There is one code
//! path: only the source of the numbers changes.
//!
//! ```
//! use actor_core::entropy;
//! let first = entropy::seeded(7, || (entropy::next_u64(), entropy::next_u64()));
//! let again = entropy::seeded(7, || (entropy::next_u64(), entropy::next_u64()));
//! assert_eq!(first, again);
//! assert_ne!(first.0, first.1);
//! ```

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siphasher::sip::SipHasher13;

/// The seeded source of the current thread, if any.
#[derive(Clone, Copy)]
struct Source {
    seed: u64,
    /// Random numbers drawn so far.
    drawn: u64,
    /// Ids and numbers handed out so far.
    numbered: u64,
    /// Tokio's time when [`system_time`] was first read in the scope.
    origin: Option<tokio::time::Instant>,
}

thread_local! {
    static SOURCE: Cell<Option<Source>> = const { Cell::new(None) };
}

/// Where a seeded scope's wall clock starts: 2026-01-01 00:00:00 UTC.
const SEEDED_EPOCH: Duration = Duration::from_secs(1_767_225_600);

/// Where seeded ids start: far above what a process-wide counter reaches,
/// so an id numbered in a simulation is never one numbered outside it.
const SEEDED_NUMBERS: u64 = 1 << 62;

/// Runs `f` with every random number and id of this thread drawn from
/// `seed`, then restores what was there before (calls nest).
///
/// Everything `f` does on this thread, including the tasks of a
/// single-threaded Tokio runtime it blocks on, sees the same numbers in the
/// same order for the same seed. Work on other threads is not affected.
///
/// Ids (of actors, monitors, connections) numbered inside are unique among
/// themselves and never equal to an id numbered outside, but two seeded
/// runs one after the other number the same ids: keep what one run made out
/// of the next.
pub fn seeded<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Source>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SOURCE.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SOURCE.with(|s| s.replace(Some(Source { seed, drawn: 0, numbered: 0, origin: None }))));
    f()
}

/// The wall clock, for timestamps an application keeps or orders
/// (versions, expiry dates): [`SystemTime::now`], or, inside [`seeded`], a
/// clock that reads 2026-01-01 00:00:00 UTC when first read and then
/// runs with Tokio's clock (virtual time on a paused runtime), so that a
/// simulated run reads the same times every time.
///
/// ```
/// use actor_core::entropy;
/// let (a, b) = entropy::seeded(1, || (entropy::system_time(), entropy::system_time()));
/// assert!(b >= a);
/// assert_eq!(a.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(), 1_767_225_600);
/// ```
pub fn system_time() -> SystemTime {
    let seeded = SOURCE.with(|s| {
        let mut src = s.get()?;
        let now = tokio::time::Instant::now();
        let origin = *src.origin.get_or_insert(now);
        s.set(Some(src));
        Some(now.saturating_duration_since(origin))
    });
    match seeded {
        Some(elapsed) => UNIX_EPOCH + SEEDED_EPOCH + elapsed,
        None => SystemTime::now(),
    }
}

/// The seed of the current thread's [`seeded`] scope, if it is in one.
pub fn seed() -> Option<u64> {
    SOURCE.with(|s| s.get().map(|s| s.seed))
}

/// A random number: from the operating system's randomness, or the next
/// one drawn from the seed inside [`seeded`].
pub fn next_u64() -> u64 {
    let drawn = SOURCE.with(|s| {
        let mut src = s.get()?;
        src.drawn += 1;
        s.set(Some(src));
        Some((src.seed, src.drawn))
    });
    match drawn {
        // SipHash as a keyed function of a counter: the same seed gives the
        // same stream, different seeds unrelated streams.
        Some((seed, n)) => {
            let mut h = SipHasher13::new_with_keys(seed, 0x666f_6f74_6c69_6768);
            h.write_u64(n);
            h.finish()
        }
        None => {
            static DRAWN: AtomicU64 = AtomicU64::new(0);
            std::hash::RandomState::new().hash_one(DRAWN.fetch_add(1, Ordering::Relaxed))
        }
    }
}

/// The next number of a process-wide sequence counted in `counter`, or,
/// inside [`seeded`], of the scope's own sequence (which starts far above
/// any process-wide count). Numbers grow in the order they are taken.
pub fn number(counter: &AtomicU64) -> u64 {
    let seeded = SOURCE.with(|s| {
        let mut src = s.get()?;
        src.numbered += 1;
        s.set(Some(src));
        Some(SEEDED_NUMBERS + src.numbered)
    });
    seeded.unwrap_or_else(|| counter.fetch_add(1, Ordering::Relaxed))
}

/// The hash keys of the runtime's maps: keyed SipHash-1-3, as std's
/// `RandomState`, with keys drawn by [`next_u64`] when the map is made, so
/// a peer cannot predict them and a seeded run orders its maps the same
/// way every time.
#[derive(Clone, Debug)]
pub struct Keys {
    k0: u64,
    k1: u64,
}

impl Keys {
    /// Fresh keys (see [`next_u64`]).
    pub fn new() -> Self {
        Keys { k0: next_u64(), k1: next_u64() }
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for Keys {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// A hash map with [`Keys`].
pub type HashMap<K, V> = std::collections::HashMap<K, V, Keys>;
/// A hash set with [`Keys`].
pub type HashSet<K> = std::collections::HashSet<K, Keys>;
/// A concurrent map with [`Keys`]: make one with [`dash_map`], whose shard
/// count does not depend on the machine.
pub type DashMap<K, V> = dashmap::DashMap<K, V, Keys>;

/// Shards of a [`dash_map`]: fixed, where dashmap's default follows the
/// machine's parallelism, so that a seeded run orders its maps the same on
/// every machine.
pub const DASH_MAP_SHARDS: usize = 32;

/// An empty [`DashMap`] with fresh [`Keys`] and [`DASH_MAP_SHARDS`] shards.
pub fn dash_map<K: Eq + std::hash::Hash, V>() -> DashMap<K, V> {
    dashmap::DashMap::with_hasher_and_shard_amount(Keys::new(), DASH_MAP_SHARDS)
}
/// A concurrent set with [`Keys`].
pub type DashSet<K> = dashmap::DashSet<K, Keys>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_numbers_and_another_seed_others() {
        let draw = || (0..4).map(|_| next_u64()).collect::<Vec<_>>();
        let a = seeded(1, draw);
        assert_eq!(a, seeded(1, draw));
        assert_ne!(a, seeded(2, draw));
        assert_ne!(draw(), draw(), "outside a seeded scope numbers are random");
    }

    #[test]
    fn seeded_numbers_restart_per_scope_and_stay_apart_from_the_process_ones() {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        let outside = number(&COUNTER);
        let (a, b) = seeded(9, || (number(&COUNTER), number(&COUNTER)));
        assert!(a < b);
        assert_eq!(seeded(9, || number(&COUNTER)), a, "each scope numbers from the start");
        assert!(a > outside && number(&COUNTER) == outside + 1, "the process-wide count is untouched");
        assert_eq!(seed(), None);
        assert_eq!(seeded(5, || seeded(6, seed)), Some(6));
    }

    #[test]
    fn maps_made_under_the_same_seed_iterate_in_the_same_order() {
        let order = || {
            let mut map: HashMap<u64, ()> = HashMap::default();
            map.extend((0..64).map(|k| (k, ())));
            map.into_keys().collect::<Vec<_>>()
        };
        assert_eq!(seeded(3, order), seeded(3, order));
        assert_ne!(seeded(3, order), seeded(4, order));
    }
}
