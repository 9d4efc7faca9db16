//! The per-member request rate: governor's GCRA keyed by member id, on a
//! state store of bounded size.
//!
//! Checked right after the token verified and before anything that costs
//! (the in-flight permit, the event state, Redis, the body): a member over
//! the rate is answered 429 with Retry-After. governor's own keyed stores
//! grow with every key until `retain_recent` runs; this store has a fixed
//! capacity instead: a full shard first forgets the members that have been
//! idle long enough to be back to a full burst (forgetting them changes no
//! decision), and only if none is, the longest idle one (who then gets a
//! fresh burst: the limit loosens under a flood of members, memory never grows).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

/// Lock stripes of the store (members hash into one).
const SHARDS: usize = 16;

struct Slot {
    /// governor's state: the theoretical arrival time of the next request.
    tat: Nanos,
    last_seen: Instant,
}

/// A keyed governor state store holding at most `capacity` members. Cheap
/// to clone (the limiter owns one handle, [`MemberRateLimit`] another).
#[derive(Clone)]
pub struct BoundedStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    shards: Vec<Mutex<HashMap<String, Slot>>>,
    per_shard: usize,
    /// After this long without a request, a member's state equals a fresh one.
    forget_after: Duration,
    hasher: RandomState,
}

impl BoundedStore {
    fn new(capacity: usize, forget_after: Duration) -> Self {
        Self {
            inner: Arc::new(StoreInner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                per_shard: capacity.div_ceil(SHARDS).max(1),
                forget_after,
                hasher: RandomState::new(),
            }),
        }
    }
}

impl StoreInner {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Slot>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    /// Makes room for one more member in a full shard.
    fn make_room(&self, shard: &mut HashMap<String, Slot>) {
        let now = Instant::now();
        shard.retain(|_, slot| now.duration_since(slot.last_seen) < self.forget_after);
        if shard.len() >= self.per_shard {
            if let Some(oldest) = shard.iter().min_by_key(|(_, slot)| slot.last_seen).map(|(k, _)| k.clone()) {
                shard.remove(&oldest);
                metrics::counter!("firstcome_ingest_rate_limit_evictions_total").increment(1);
            }
        }
    }
}

impl StateStore for BoundedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let inner = &self.inner;
        let mut shard = inner.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let previous = shard.get(key).map(|slot| slot.tat);
        let (answer, tat) = f(previous)?;
        if previous.is_none() && shard.len() >= inner.per_shard {
            inner.make_room(&mut shard);
        }
        shard.insert(key.clone(), Slot { tat, last_seen: Instant::now() });
        Ok(answer)
    }
}

/// Requests per member.
pub struct MemberRateLimit {
    limiter: RateLimiter<String, BoundedStore, DefaultClock>,
    store: BoundedStore,
    clock: DefaultClock,
}

impl MemberRateLimit {
    /// `per_sec` sustained, `burst` at once, at most `capacity` members remembered.
    pub fn new(per_sec: u32, burst: u32, capacity: usize) -> Self {
        let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        // A member is back to a full burst after burst × the replenish interval.
        let forget_after = quota.replenish_interval() * burst.get() + Duration::from_millis(1);
        let clock = DefaultClock::default();
        let store = BoundedStore::new(capacity, forget_after);
        let limiter = RateLimiter::new(quota, store.clone(), clock.clone());
        Self { limiter, store, clock }
    }

    /// `Ok` when `member` may make this request, else how long to wait.
    pub fn check(&self, member: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&member.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// How many members are remembered now.
    pub fn tracked(&self) -> usize {
        self.store.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_over_the_burst_waits_and_others_do_not() {
        let limit = MemberRateLimit::new(1, 3, 100);
        for _ in 0..3 {
            assert!(limit.check("m-1").is_ok());
        }
        let wait = limit.check("m-1").expect_err("the fourth at once is refused");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limit.check("m-2").is_ok(), "another member has its own budget");
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_members() {
        let limit = MemberRateLimit::new(1, 2, 64);
        for i in 0..10_000 {
            let _ = limit.check(&format!("m-{i}"));
        }
        // 16 shards of ceil(64 / 16) = 4.
        assert!(limit.tracked() <= 64, "{} members remembered", limit.tracked());
        // A member still remembered keeps its spent budget.
        let last = "m-9999";
        let _ = limit.check(last);
        assert!(limit.check(last).is_err());
    }
}
