//! Request budgets: governor's GCRA keyed by member id ([`MemberRateLimit`])
//! and by client address ([`AddressLimit`]), on a state store of bounded size.
//!
//! Checked right after the token verified and before anything that costs
//! (the in-flight permit, the event state, Redis, the body): a member over
//! the rate is answered 429 with Retry-After. governor's own keyed stores
//! grow with every key until `retain_recent` runs; this store has a fixed
//! capacity instead: a full shard first forgets the members that have been
//! idle long enough to be back to a full burst (forgetting them changes no
//! decision), and only if none is, the longest idle one (who then gets a
//! fresh burst: the limit loosens under a flood of members, memory never grows).
//!
//! The address budget counts refusals that cost something (a token checked
//! and found bad, an event id looked up and found unknown): once an address
//! has spent it, its requests are answered 429 before any of that work until
//! the budget refills. See [`AddressLimit`].

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
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
    /// Set when the key's budget ran out ([`AddressLimit`]): until then its
    /// requests are refused without being counted again.
    blocked_until: Option<Instant>,
    /// The key ran out of budget once and has not been well behaved since:
    /// each of its requests pays a unit before the handler ([`AddressLimit::admit`]).
    probation: bool,
}

/// A keyed governor state store holding at most `capacity` keys. Cheap
/// to clone (the limiter owns one handle, [`MemberRateLimit`] another).
pub struct BoundedStore<K = String> {
    inner: Arc<StoreInner<K>>,
}

impl<K> Clone for BoundedStore<K> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

struct StoreInner<K> {
    shards: Vec<Mutex<HashMap<K, Slot>>>,
    per_shard: usize,
    /// After this long without a request, a member's state equals a fresh one.
    forget_after: Duration,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone> BoundedStore<K> {
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

impl<K: Hash + Eq + Clone> StoreInner<K> {
    fn shard(&self, key: &K) -> &Mutex<HashMap<K, Slot>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Marks `key` refused until `until`, and on probation after it (a key
    /// governor just refused has a slot).
    fn block(&self, key: &K, until: Instant) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = shard.get_mut(key) {
            slot.blocked_until = Some(until);
            slot.probation = true;
        }
    }

    fn end_probation(&self, key: &K) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = shard.get_mut(key) {
            slot.probation = false;
        }
    }

    /// How long `key` stays refused, if it is.
    fn blocked(&self, key: &K) -> Option<Duration> {
        self.standing(key).0
    }

    /// How long `key` stays refused, if it is, and whether it is on
    /// probation: one lock for both (the guard asks on every request).
    fn standing(&self, key: &K) -> (Option<Duration>, bool) {
        let shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = shard.get(key) else { return (None, false) };
        let left = slot
            .blocked_until
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero());
        (left, slot.probation)
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    /// Makes room for one more member in a full shard.
    fn make_room(&self, shard: &mut HashMap<K, Slot>) {
        let now = Instant::now();
        shard.retain(|_, slot| {
            now.duration_since(slot.last_seen) < self.forget_after
                || slot.blocked_until.is_some_and(|until| until > now)
        });
        if shard.len() >= self.per_shard {
            if let Some(oldest) = shard.iter().min_by_key(|(_, slot)| slot.last_seen).map(|(k, _)| k.clone()) {
                shard.remove(&oldest);
                metrics::counter!("firstcome_ingest_rate_limit_evictions_total").increment(1);
            }
        }
    }
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let inner = &self.inner;
        let mut shard = inner.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let previous = shard.get(key).map(|slot| slot.tat);
        let probation = shard.get(key).is_some_and(|slot| slot.probation);
        let (answer, tat) = f(previous)?;
        if previous.is_none() && shard.len() >= inner.per_shard {
            inner.make_room(&mut shard);
        }
        shard.insert(key.clone(), Slot { tat, last_seen: Instant::now(), blocked_until: None, probation });
        Ok(answer)
    }
}

/// A GCRA limiter keyed by `K` on a [`BoundedStore`], with `per_sec`
/// sustained, `burst` at once and at most `capacity` keys remembered.
fn bounded_limiter<K: Hash + Eq + Clone>(
    per_sec: u32,
    burst: u32,
    capacity: usize,
) -> (RateLimiter<K, BoundedStore<K>, DefaultClock>, BoundedStore<K>, DefaultClock) {
    let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::per_second(per_sec).allow_burst(burst);
    // A key is back to a full burst after burst × the replenish interval.
    let forget_after = quota.replenish_interval() * burst.get() + Duration::from_millis(1);
    let clock = DefaultClock::default();
    let store = BoundedStore::new(capacity, forget_after);
    let limiter = RateLimiter::new(quota, store.clone(), clock.clone());
    (limiter, store, clock)
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
        let (limiter, store, clock) = bounded_limiter(per_sec, burst, capacity);
        Self { limiter, store, clock }
    }

    /// `Ok` when `member` may make this request, else how long to wait.
    pub fn check(&self, member: &str) -> Result<(), Duration> {
        self.limiter.check_key(&member.to_string()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// How many members are remembered now.
    pub fn tracked(&self) -> usize {
        self.store.inner.len()
    }
}

/// Costly refusals per client address: a client sending forged tokens or
/// random event ids spends its budget (`burst`, refilled at `per_sec`), then
/// every request from its address is answered 429 before the token's HMAC
/// or any Redis lookup, until one unit has refilled. Counting refusals only,
/// not requests, keeps members behind one shared address (a carrier's NAT)
/// unaffected unless one of them misbehaves; they share its penalty then,
/// for at most a replenish interval at a time.
pub struct AddressLimit {
    limiter: RateLimiter<IpAddr, BoundedStore<IpAddr>, DefaultClock>,
    store: BoundedStore<IpAddr>,
    clock: DefaultClock,
}

impl AddressLimit {
    /// `per_sec` refusals sustained, `burst` at once, at most `capacity` addresses remembered.
    pub fn new(per_sec: u32, burst: u32, capacity: usize) -> Self {
        let (limiter, store, clock) = bounded_limiter(per_sec, burst, capacity);
        Self { limiter, store, clock }
    }

    /// How long `address` stays refused, when it has spent its budget.
    pub fn blocked(&self, address: IpAddr) -> Option<Duration> {
        self.store.inner.blocked(&address)
    }

    /// Whether a request of `address` may reach the handler: `Err(wait)`
    /// while it is blocked. An address that ran out of budget once is on
    /// probation: each request pays its unit here, before the handler
    /// (`Ok(true)`), so the requests in flight when a unit refills cannot
    /// all pass at once (counting only after the handler let a client with
    /// many connections through at their number per refill). Probation
    /// ends with the address' first request that was not a costly refusal.
    pub fn admit(&self, address: IpAddr) -> Result<bool, Duration> {
        match self.store.inner.standing(&address) {
            (Some(wait), _) => return Err(wait),
            (None, false) => return Ok(false),
            (None, true) => {}
        }
        match self.limiter.check_key(&address) {
            Ok(()) => Ok(true),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                self.store.inner.block(&address, Instant::now() + wait);
                Err(wait)
            }
        }
    }

    /// After the handler: counts a costly refusal that was not paid for in
    /// [`AddressLimit::admit`], and ends the probation of an address whose
    /// request was answered well.
    pub fn settle(&self, address: IpAddr, prepaid: bool, costly: bool) {
        match (prepaid, costly) {
            (false, true) => self.refused(address),
            (true, false) => self.store.inner.end_probation(&address),
            _ => {}
        }
    }

    /// Counts one costly refusal of `address`; when that was over its
    /// budget, the address is refused until a unit has refilled.
    pub fn refused(&self, address: IpAddr) {
        if let Err(not_until) = self.limiter.check_key(&address) {
            let wait = not_until.wait_time_from(self.clock.now());
            self.store.inner.block(&address, Instant::now() + wait);
        }
    }

    /// How many addresses are remembered now.
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

    #[test]
    fn an_address_is_blocked_only_after_its_refusal_budget() {
        let limit = AddressLimit::new(1, 3, 100);
        let attacker: IpAddr = "203.0.113.7".parse().unwrap();
        let neighbour: IpAddr = "203.0.113.8".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limit.blocked(attacker), None);
            limit.refused(attacker);
        }
        assert_eq!(limit.blocked(attacker), None, "the burst itself is allowed");
        limit.refused(attacker);
        let wait = limit.blocked(attacker).expect("over the budget: blocked");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(limit.blocked(neighbour), None, "another address keeps its budget");
    }

    /// Many requests in flight when a unit refills: one passes, the rest
    /// are refused before the handler (before, all passed: the refusals
    /// were counted only after the handler).
    #[test]
    fn requests_in_flight_when_a_unit_refills_pass_one_per_unit() {
        let limit = AddressLimit::new(50, 1, 100);
        let address: IpAddr = "198.51.100.9".parse().unwrap();
        limit.settle(address, false, true);
        limit.settle(address, false, true);
        assert!(limit.admit(address).is_err(), "over the budget: blocked");
        std::thread::sleep(Duration::from_millis(25));
        let admitted = (0..64).filter(|_| limit.admit(address).is_ok()).count();
        assert_eq!(admitted, 1, "64 requests in flight, one unit refilled");
        // A well-answered request ends the probation: the next ones pass.
        std::thread::sleep(Duration::from_millis(25));
        let prepaid = limit.admit(address).expect("a unit refilled");
        assert!(prepaid);
        limit.settle(address, prepaid, false);
        assert_eq!(limit.admit(address), Ok(false));
    }

    #[test]
    fn a_blocked_address_is_let_in_again_once_a_unit_refilled() {
        let limit = AddressLimit::new(50, 1, 100);
        let address: IpAddr = "198.51.100.1".parse().unwrap();
        limit.refused(address);
        limit.refused(address);
        assert!(limit.blocked(address).is_some());
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(limit.blocked(address), None);
    }

    #[test]
    fn addresses_stay_bounded_under_a_flood() {
        let limit = AddressLimit::new(1, 1, 64);
        for i in 0..5_000u32 {
            limit.refused(IpAddr::from(i.to_be_bytes()));
        }
        assert!(limit.tracked() <= 64, "{} addresses remembered", limit.tracked());
    }
}
