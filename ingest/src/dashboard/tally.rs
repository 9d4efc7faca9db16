//! Entry answers by event and outcome on this instance, for the dashboard's
//! "entries per second by outcome" (the dashboard takes the difference of
//! two readings). Only events this instance knows are counted, so the map is
//! bounded by the events in the cache, never by what clients send.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Cumulative answers per event and outcome. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    inner: Arc<Mutex<HashMap<String, BTreeMap<&'static str, u64>>>>,
}

impl Tally {
    pub fn record(&self, event_id: &str, outcome: &'static str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.get_mut(event_id) {
            Some(counts) => *counts.entry(outcome).or_default() += 1,
            None => {
                inner.insert(event_id.to_string(), BTreeMap::from([(outcome, 1)]));
            }
        }
    }

    /// The counts of `event_id` so far.
    pub fn of(&self, event_id: &str) -> BTreeMap<&'static str, u64> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.get(event_id).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_per_event_and_outcome() {
        let tally = Tally::default();
        tally.record("ev-1", "accepted");
        tally.record("ev-1", "accepted");
        tally.record("ev-1", "sold_out");
        tally.record("ev-2", "waiting");
        assert_eq!(tally.of("ev-1"), BTreeMap::from([("accepted", 2), ("sold_out", 1)]));
        assert_eq!(tally.of("ev-3"), BTreeMap::new());
    }
}
