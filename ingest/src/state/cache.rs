//! The in-memory event state.
//!
//! Every entry carries a version bumped by each pub/sub change; a periodic
//! re-read only replaces an entry whose version did not move while it was
//! reading, so a stale read can never undo a fresher notification.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use platform::event_keys::{EventKeys, EventMeta, EventStatus, StateChange};
use redis::aio::ConnectionLike;

/// How many unknown event ids are remembered (to spare Redis from a flood of
/// requests for an id that does not exist); beyond it the oldest is forgotten.
pub const MAX_UNKNOWN: usize = 10_000;

/// Where one event stands for a request arriving at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Not open yet; opens in this many milliseconds.
    TooEarly {
        opens_in_ms: i64,
    },
    Open,
    SoldOut,
    Closed,
}

impl Gate {
    /// Closed wins over sold out: a closed event never reopens.
    pub fn of(meta: &EventMeta, now_ms: i64) -> Self {
        if meta.status == EventStatus::Closed || now_ms >= meta.close_at_ms {
            Gate::Closed
        } else if now_ms < meta.open_at_ms {
            Gate::TooEarly { opens_in_ms: meta.open_at_ms - now_ms }
        } else if meta.status == EventStatus::SoldOut {
            Gate::SoldOut
        } else {
            Gate::Open
        }
    }

    /// The public name of the state (`GET /api/events/{id}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::TooEarly { .. } => "upcoming",
            Gate::Open => "open",
            Gate::SoldOut => "sold_out",
            Gate::Closed => "closed",
        }
    }
}

#[derive(Debug)]
struct Cached {
    meta: Arc<EventMeta>,
    version: u64,
}

/// Event ids Redis did not know, with when: a bounded FIFO (the oldest is
/// forgotten first), so a flood of random ids costs fixed memory.
#[derive(Debug, Default)]
struct Unknown {
    at: HashMap<String, Instant>,
    order: VecDeque<String>,
}

impl Unknown {
    fn remember(&mut self, event_id: &str) {
        if self.at.insert(event_id.to_string(), Instant::now()).is_none() {
            self.order.push_back(event_id.to_string());
        }
        while self.order.len() > MAX_UNKNOWN {
            if let Some(oldest) = self.order.pop_front() {
                self.at.remove(&oldest);
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    events: RwLock<HashMap<String, Cached>>,
    unknown: Mutex<Unknown>,
    unknown_ttl: Duration,
    /// One first-sight load at a time PER EVENT: the opening flood on a cold
    /// instance becomes one Redis read per event, not one per request, and
    /// loads of different ids (a flood of random ones) never queue behind
    /// each other. An entry lives only while its load runs.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The events by id. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventCache {
    inner: Arc<Inner>,
}

/// A known event and the version the reader saw.
pub type Snapshot = Vec<(String, u64)>;

impl EventCache {
    /// `unknown_ttl`: how long a "no such event" answer is trusted.
    pub fn new(unknown_ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                events: RwLock::new(HashMap::new()),
                unknown: Mutex::new(Unknown::default()),
                unknown_ttl,
                loading: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The cached event, without touching Redis.
    pub fn get(&self, event_id: &str) -> Option<Arc<EventMeta>> {
        let events = self.inner.events.read().unwrap_or_else(|e| e.into_inner());
        events.get(event_id).map(|c| c.meta.clone())
    }

    /// The event, loaded from Redis on first sight; `Ok(None)` when unknown.
    pub async fn get_or_load<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
    ) -> redis::RedisResult<Option<Arc<EventMeta>>> {
        if let Some(meta) = self.get(event_id) {
            return Ok(Some(meta));
        }
        if self.recently_unknown(event_id) {
            return Ok(None);
        }
        let gate = {
            let mut loading = self.inner.loading.lock().unwrap_or_else(|e| e.into_inner());
            loading.entry(event_id.to_string()).or_default().clone()
        };
        let loaded = {
            let _loading = gate.lock().await;
            self.load(conn, event_id).await
        };
        // The last one out removes the gate (a waiter still holding a clone
        // finds the result cached once it gets the lock).
        let mut loading = self.inner.loading.lock().unwrap_or_else(|e| e.into_inner());
        if loading.get(event_id).is_some_and(|g| Arc::ptr_eq(g, &gate) && Arc::strong_count(g) <= 2) {
            loading.remove(event_id);
        }
        loaded
    }

    /// The load itself, under the event's gate.
    async fn load<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
    ) -> redis::RedisResult<Option<Arc<EventMeta>>> {
        // Another request may have loaded it while this one waited.
        if let Some(meta) = self.get(event_id) {
            return Ok(Some(meta));
        }
        if self.recently_unknown(event_id) {
            return Ok(None);
        }
        match read_event(conn, event_id).await? {
            Some(meta) => {
                let meta = Arc::new(meta);
                let mut events = self.inner.events.write().unwrap_or_else(|e| e.into_inner());
                let cached = events.entry(event_id.to_string()).or_insert(Cached { meta: meta.clone(), version: 0 });
                Ok(Some(cached.meta.clone()))
            }
            None => {
                self.inner.unknown.lock().unwrap_or_else(|e| e.into_inner()).remember(event_id);
                Ok(None)
            }
        }
    }

    fn recently_unknown(&self, event_id: &str) -> bool {
        let unknown = self.inner.unknown.lock().unwrap_or_else(|e| e.into_inner());
        unknown.at.get(event_id).is_some_and(|at| at.elapsed() < self.inner.unknown_ttl)
    }

    /// How many unknown ids are remembered, and how many loads are running.
    pub fn memory(&self) -> (usize, usize) {
        let unknown = self.inner.unknown.lock().unwrap_or_else(|e| e.into_inner()).at.len();
        let loading = self.inner.loading.lock().unwrap_or_else(|e| e.into_inner()).len();
        (unknown, loading)
    }

    /// Applies a published change to a known event; unknown events are
    /// ignored (their first load reads the current state).
    pub fn apply(&self, change: &StateChange) -> bool {
        let mut events = self.inner.events.write().unwrap_or_else(|e| e.into_inner());
        match events.get_mut(&change.event_id) {
            Some(cached) => {
                if cached.meta.status != change.status {
                    let mut meta = (*cached.meta).clone();
                    meta.status = change.status;
                    cached.meta = Arc::new(meta);
                }
                cached.version += 1;
                true
            }
            None => false,
        }
    }

    /// The known events with their versions, before a re-read.
    pub fn snapshot(&self) -> Snapshot {
        let events = self.inner.events.read().unwrap_or_else(|e| e.into_inner());
        events.iter().map(|(id, c)| (id.clone(), c.version)).collect()
    }

    /// Stores a re-read state unless a change arrived since `seen_version`.
    /// `None` (the keys expired or were deleted) forgets the event.
    pub fn replace_if_unchanged(&self, event_id: &str, seen_version: u64, fresh: Option<EventMeta>) {
        let mut events = self.inner.events.write().unwrap_or_else(|e| e.into_inner());
        let Some(cached) = events.get_mut(event_id) else { return };
        if cached.version != seen_version {
            return;
        }
        match fresh {
            Some(meta) => {
                if *cached.meta != meta {
                    tracing::info!(event_id, status = meta.status.as_str(), "event state refreshed");
                    cached.meta = Arc::new(meta);
                }
            }
            None => {
                events.remove(event_id);
            }
        }
    }

    /// Re-reads every known event from Redis (the periodic safety net).
    pub async fn refresh_all<C: ConnectionLike + Send>(&self, conn: &mut C) -> redis::RedisResult<()> {
        for (event_id, version) in self.snapshot() {
            let fresh = read_event(conn, &event_id).await?;
            self.replace_if_unchanged(&event_id, version, fresh);
        }
        Ok(())
    }

    /// The ids of the known events.
    pub fn known_ids(&self) -> Vec<String> {
        let events = self.inner.events.read().unwrap_or_else(|e| e.into_inner());
        events.keys().cloned().collect()
    }
}

/// Reads an event's meta and stock in one round trip. An `open` event whose
/// counter is at zero is seen as sold out, whoever forgot to say so.
async fn read_event<C: ConnectionLike + Send>(conn: &mut C, event_id: &str) -> redis::RedisResult<Option<EventMeta>> {
    let keys = EventKeys::new(event_id);
    let (fields, stock): (HashMap<String, String>, Option<String>) =
        redis::pipe().cmd("HGETALL").arg(&keys.meta).cmd("GET").arg(&keys.stock).query_async(conn).await?;
    let Some(mut meta) = EventMeta::from_fields(&fields) else {
        if !fields.is_empty() {
            tracing::warn!(event_id, "event meta in Redis is incomplete; treated as unknown");
        }
        return Ok(None);
    };
    let sold = stock.and_then(|s| s.trim().parse::<i64>().ok()).is_some_and(|s| s <= 0);
    if meta.status == EventStatus::Open && sold {
        meta.status = EventStatus::SoldOut;
    }
    Ok(Some(meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: EventStatus) -> EventMeta {
        EventMeta {
            event_id: "ev".into(),
            open_at_ms: 1_000,
            close_at_ms: 2_000,
            for_sale: 10,
            line_depth: 100,
            questions: vec![],
            status,
        }
    }

    fn cache_with(status: EventStatus) -> EventCache {
        let cache = EventCache::new(Duration::from_secs(1));
        cache.inner.events.write().unwrap().insert("ev".into(), Cached { meta: Arc::new(meta(status)), version: 0 });
        cache
    }

    #[test]
    fn the_gate_follows_the_clock_and_the_status() {
        assert_eq!(Gate::of(&meta(EventStatus::Open), 999), Gate::TooEarly { opens_in_ms: 1 });
        assert_eq!(Gate::of(&meta(EventStatus::Open), 1_000), Gate::Open);
        assert_eq!(Gate::of(&meta(EventStatus::SoldOut), 1_500), Gate::SoldOut);
        assert_eq!(Gate::of(&meta(EventStatus::Open), 2_000), Gate::Closed);
        assert_eq!(Gate::of(&meta(EventStatus::Closed), 1_500), Gate::Closed);
        assert_eq!(Gate::of(&meta(EventStatus::SoldOut), 2_500), Gate::Closed);
    }

    #[test]
    fn a_published_change_updates_a_known_event() {
        let cache = cache_with(EventStatus::Open);
        assert!(cache.apply(&StateChange { event_id: "ev".into(), status: EventStatus::SoldOut }));
        assert_eq!(cache.get("ev").unwrap().status, EventStatus::SoldOut);
        assert!(!cache.apply(&StateChange { event_id: "other".into(), status: EventStatus::SoldOut }));
        assert!(cache.get("other").is_none());
    }

    #[test]
    fn a_stale_reread_never_undoes_a_fresher_change() {
        let cache = cache_with(EventStatus::Open);
        let seen = cache.snapshot()[0].1;
        cache.apply(&StateChange { event_id: "ev".into(), status: EventStatus::SoldOut });
        // The re-read started before the change and saw `open`.
        cache.replace_if_unchanged("ev", seen, Some(meta(EventStatus::Open)));
        assert_eq!(cache.get("ev").unwrap().status, EventStatus::SoldOut);
        // A re-read after the change is applied.
        let seen = cache.snapshot()[0].1;
        cache.replace_if_unchanged("ev", seen, Some(meta(EventStatus::Open)));
        assert_eq!(cache.get("ev").unwrap().status, EventStatus::Open);
    }

    #[test]
    fn unknown_ids_are_bounded_and_the_oldest_go_first() {
        let cache = EventCache::new(Duration::from_secs(60));
        for i in 0..MAX_UNKNOWN + 500 {
            cache.inner.unknown.lock().unwrap().remember(&format!("nope-{i}"));
        }
        assert_eq!(cache.memory().0, MAX_UNKNOWN);
        assert!(!cache.recently_unknown("nope-0"), "the oldest is forgotten");
        assert!(cache.recently_unknown(&format!("nope-{}", MAX_UNKNOWN + 499)));
    }

    #[test]
    fn an_event_gone_from_redis_is_forgotten() {
        let cache = cache_with(EventStatus::Open);
        cache.replace_if_unchanged("ev", 0, None);
        assert!(cache.get("ev").is_none());
    }
}
