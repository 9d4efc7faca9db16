//! The provider's ledger of issued gifts, keyed by idempotency key.
//!
//! Check-and-insert happens under one lock, so however many identical calls
//! race, exactly one issues the gift and the others replay it.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /v1/gifts` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiftRequest {
    /// The caller's key: one gift per key, ever.
    pub idempotency_key: String,
    pub phone: String,
    pub product: String,
    /// Face value in KRW.
    pub amount: i64,
}

impl GiftRequest {
    /// Why the request is malformed, if it is.
    pub fn problem(&self) -> Option<&'static str> {
        if self.idempotency_key.trim().is_empty() {
            Some("idempotency_key is empty")
        } else if self.phone.trim().is_empty() {
            Some("phone is empty")
        } else if self.product.trim().is_empty() {
            Some("product is empty")
        } else if self.amount <= 0 {
            Some("amount must be positive")
        } else {
            None
        }
    }
}

/// An issued gifticon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gift {
    pub gift_id: String,
    pub idempotency_key: String,
    pub phone: String,
    pub product: String,
    pub amount: i64,
    /// Always `ISSUED` in this sandbox.
    pub status: String,
    pub issued_at: DateTime<Utc>,
}

/// What a `POST` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// A new gift (201).
    New(Gift),
    /// The key was seen with the same request: the same gift again (200).
    Replayed(Gift),
    /// The key was seen with another phone, product or amount (409).
    Conflict(Gift),
    /// The phone is refused and nothing was issued (422).
    Refused,
}

#[derive(Default)]
pub struct GiftStore {
    gifts: Mutex<HashMap<String, Gift>>,
}

impl GiftStore {
    /// Issues a gift for `request` unless its key already has one.
    /// `refused` is only consulted for a new key: a replay always answers
    /// with the gift already issued, as real idempotency keys do.
    pub fn issue(&self, request: &GiftRequest, refused: bool) -> Issued {
        let mut gifts = self.lock();
        if let Some(existing) = gifts.get(&request.idempotency_key) {
            let same = existing.phone == request.phone
                && existing.product == request.product
                && existing.amount == request.amount;
            return match same {
                true => Issued::Replayed(existing.clone()),
                false => Issued::Conflict(existing.clone()),
            };
        }
        if refused {
            return Issued::Refused;
        }
        let gift = Gift {
            gift_id: format!("gft_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: request.idempotency_key.clone(),
            phone: request.phone.clone(),
            product: request.product.clone(),
            amount: request.amount,
            status: "ISSUED".into(),
            issued_at: Utc::now(),
        };
        gifts.insert(gift.idempotency_key.clone(), gift.clone());
        Issued::New(gift)
    }

    pub fn get(&self, key: &str) -> Option<Gift> {
        self.lock().get(key).cloned()
    }

    /// A gift issued under another key than `key`, if there is one.
    pub fn other_than(&self, key: &str) -> Option<Gift> {
        self.lock().values().find(|g| g.idempotency_key != key).cloned()
    }

    /// Every gift, oldest first.
    pub fn all(&self) -> Vec<Gift> {
        let mut gifts: Vec<Gift> = self.lock().values().cloned().collect();
        gifts.sort_by(|a, b| (a.issued_at, &a.gift_id).cmp(&(b.issued_at, &b.gift_id)));
        gifts
    }

    /// Forgets every gift; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut gifts = self.lock();
        let count = gifts.len();
        gifts.clear();
        count
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Gift>> {
        // Nothing is left half-written under this lock, so a poisoned one is still consistent.
        self.gifts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str, phone: &str) -> GiftRequest {
        GiftRequest { idempotency_key: key.into(), phone: phone.into(), product: "coffee".into(), amount: 10_000 }
    }

    #[test]
    fn a_repeated_key_replays_the_same_gift() {
        let store = GiftStore::default();
        let Issued::New(first) = store.issue(&request("k1", "010"), false) else { panic!("not issued") };
        assert_eq!(store.issue(&request("k1", "010"), false), Issued::Replayed(first));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_repeated_key_with_another_phone_conflicts() {
        let store = GiftStore::default();
        store.issue(&request("k1", "010"), false);
        assert!(matches!(store.issue(&request("k1", "011"), false), Issued::Conflict(_)));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_refused_phone_issues_nothing() {
        let store = GiftStore::default();
        assert_eq!(store.issue(&request("k1", "010"), true), Issued::Refused);
        assert!(store.get("k1").is_none());
    }

    #[test]
    fn malformed_requests_are_named() {
        assert!(request("", "010").problem().is_some());
        assert!(GiftRequest { amount: 0, ..request("k", "010") }.problem().is_some());
        assert!(request("k", "010").problem().is_none());
    }
}
