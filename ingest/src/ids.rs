//! The id rules ingest shares with every consumer (`schemas::identity`): an
//! event or member id is 1..=128 characters with no white space, control
//! character or `{ } |`. They become Redis keys (`fc:{event}:…`, whose hash
//! tag a brace would break), marks (`P|entry|ms`, split on `|`) and Kafka keys,
//! so ingest refuses what a consumer would refuse, before Redis sees it.

/// Whether `value` may be used as an event or member id.
pub fn is_valid_id(value: &str) -> bool {
    schemas::check_id("id", value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_rules_apply() {
        for ok in ["ev-1", "member-42@shop", &"x".repeat(128)] {
            assert!(is_valid_id(ok), "{ok:?}");
        }
        for bad in ["", "a b", "a\tb", "a\nb", "e{v", "e}v", "m|1", &"x".repeat(129)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
