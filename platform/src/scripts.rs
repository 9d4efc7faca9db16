//! The Redis scripts of firstcome, in one place, whichever crate runs them.
//!
//! Each script is a `.lua` file in `platform/lua/` with its KEYS/ARGV contract
//! and its answers at the top; the key names come from [`crate::event_keys`].
//! This module compiles them in and hands out a [`Script`] per script:
//!
//! | script | run by | what |
//! | --- | --- | --- |
//! | [`admit`] | ingest (`admission.rs`) | the first-entry decisions of the requests of one event waiting at the same moment (one or many, in order) |
//! | [`mark_accepted`] | `scripts/bench/redis-durability.sh` (ingest writes its marks grouped, below) | a pending first-entry mark becomes acknowledged |
//! | [`mark_accepted_many`] | ingest (`admission.rs`) | the same for many members of one event in one call (grouped acknowledgements) |
//! | [`decide`] | stock-processor (`store.rs`) | the stock decision of a batch of entries of one event |
//! | [`release`] | stock-processor (`store.rs`) | a returned unit goes to the next in line, or back to stock |
//! | [`rebuild_swap`] | stock-processor (`rebuild.rs`), `firstcome rebuild redis` | swap a rebuilt event state in (compare-and-swap on the marks) |
//! | [`release_hold`] | stock-processor (`rebuild.rs`) | a rebuild that did not swap lets go of its hold on the event |
//! | [`holes`] | ingest (`holes.rs`) | admitted entries the broker never acknowledged, past their deadline, to announce as holes |
//! | [`waiting_room`] | ingest (`waiting_room.rs`) | a member's turn in the event's waiting line (rate-paced gate, pre-queue shuffled at the opening) |
//! | [`write_event`] | `platform::event_keys::write_event` (`firstcome event create`, the stock stage's restore of a lost event) | the counter, the eligible set's expiry and `meta`, last |
//!
//! `lua/prelude.lua` holds what several scripts share — Redis' clock, the
//! committed-marks (stale) check and raising of the `applied` marks, the copy of
//! the event's expiry onto keys a script creates — as local functions. It is
//! put in front of the scripts that use it ([`DECIDE`], [`RELEASE`], [`ADMIT`])
//! with `concat!` (also [`REBUILD_SWAP`]), so each still runs as one atomic script; Lua line numbers in
//! Redis' errors count from the top of the prelude.
//!
//! `Script::invoke_async` sends EVALSHA and loads the script on NOSCRIPT (a
//! restarted or failed-over Redis); services load theirs at start so a broken
//! script fails there, not on the first record.

use ::redis::Script;

/// The shared helpers (not a script of its own).
pub const PRELUDE: &str = include_str!("../lua/prelude.lua");

/// Source of [`admit`]: prelude + `lua/admit.lua`.
pub const ADMIT: &str = concat!(include_str!("../lua/prelude.lua"), include_str!("../lua/admit.lua"));
/// Source of [`mark_accepted`]: `lua/mark_accepted.lua`.
pub const MARK_ACCEPTED: &str = include_str!("../lua/mark_accepted.lua");
/// Source of [`mark_accepted_many`]: `lua/mark_accepted_many.lua`.
pub const MARK_ACCEPTED_MANY: &str = include_str!("../lua/mark_accepted_many.lua");
/// Source of [`decide`]: prelude + `lua/decide.lua`.
pub const DECIDE: &str = concat!(include_str!("../lua/prelude.lua"), include_str!("../lua/decide.lua"));
/// Source of [`release`]: prelude + `lua/release.lua`.
pub const RELEASE: &str = concat!(include_str!("../lua/prelude.lua"), include_str!("../lua/release.lua"));
/// Source of [`rebuild_swap`]: prelude + `lua/rebuild_swap.lua`.
pub const REBUILD_SWAP: &str = concat!(include_str!("../lua/prelude.lua"), include_str!("../lua/rebuild_swap.lua"));

/// Source of [`release_hold`]: `lua/release_hold.lua`.
pub const RELEASE_HOLD: &str = include_str!("../lua/release_hold.lua");

/// Source of [`holes`]: prelude + `lua/holes.lua`.
pub const HOLES: &str = concat!(include_str!("../lua/prelude.lua"), include_str!("../lua/holes.lua"));

/// Source of [`waiting_room`]: prelude + `lua/waiting_room.lua`.
pub const WAITING_ROOM: &str = concat!(include_str!("../lua/prelude.lua"), include_str!("../lua/waiting_room.lua"));

/// Source of [`write_event`]: `lua/write_event.lua`.
pub const WRITE_EVENT: &str = include_str!("../lua/write_event.lua");

/// Source of [`hold_settle`]: `lua/hold_settle.lua`.
pub const HOLD_SETTLE: &str = include_str!("../lua/hold_settle.lua");

/// Every script by name, with its full source (what Redis is sent).
pub const ALL: [(&str, &str); 11] = [
    ("admit", ADMIT),
    ("mark_accepted", MARK_ACCEPTED),
    ("mark_accepted_many", MARK_ACCEPTED_MANY),
    ("decide", DECIDE),
    ("release", RELEASE),
    ("rebuild_swap", REBUILD_SWAP),
    ("release_hold", RELEASE_HOLD),
    ("waiting_room", WAITING_ROOM),
    ("write_event", WRITE_EVENT),
    ("holes", HOLES),
    ("hold_settle", HOLD_SETTLE),
];

/// ingest: the holes to announce (`lua/holes.lua`).
pub fn holes() -> Script {
    Script::new(HOLES)
}

/// ingest: the first-entry decisions of one or many requests of one event (`lua/admit.lua`).
pub fn admit() -> Script {
    Script::new(ADMIT)
}

/// A pending first-entry mark becomes acknowledged, one member per call
/// (`lua/mark_accepted.lua`); ingest uses [`mark_accepted_many`].
pub fn mark_accepted() -> Script {
    Script::new(MARK_ACCEPTED)
}

/// ingest: pending marks of many members of one event become acknowledged
/// (`lua/mark_accepted_many.lua`).
pub fn mark_accepted_many() -> Script {
    Script::new(MARK_ACCEPTED_MANY)
}

/// stock stage: the decision of a batch of entries of one event (`lua/decide.lua`).
pub fn decide() -> Script {
    Script::new(DECIDE)
}

/// stock stage: a returned unit (`lua/release.lua`).
pub fn release() -> Script {
    Script::new(RELEASE)
}

/// rebuild: swap a rebuilt event state in (`lua/rebuild_swap.lua`).
pub fn rebuild_swap() -> Script {
    Script::new(REBUILD_SWAP)
}

/// rebuild: let go of a hold without swapping (`lua/release_hold.lua`).
pub fn release_hold() -> Script {
    Script::new(RELEASE_HOLD)
}

/// ingest: a member's turn in the event's waiting line (`lua/waiting_room.lua`).
pub fn waiting_room() -> Script {
    Script::new(WAITING_ROOM)
}

/// ingest: keeps new admissions waiting while Redis forgot the tickets of a
/// call in flight (`lua/hold_settle.lua`).
pub fn hold_settle() -> Script {
    Script::new(HOLD_SETTLE)
}

/// An event's counter, eligible expiry and `meta` (`lua/write_event.lua`).
pub fn write_event() -> Script {
    Script::new(WRITE_EVENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's own text, without the prelude in front.
    fn body(source: &'static str) -> &'static str {
        source.strip_prefix(PRELUDE).unwrap_or(source)
    }

    #[test]
    fn every_script_states_its_contract_at_the_top() {
        for (name, source) in ALL {
            let body = body(source);
            assert!(body.starts_with(&format!("-- {name}:")), "{name}.lua does not start with its name");
            let header: String = body.lines().take_while(|l| l.starts_with("--")).collect::<Vec<_>>().join("\n");
            assert!(header.contains("KEYS"), "{name}.lua has no KEYS contract in its header");
            assert!(header.contains("ARGV"), "{name}.lua has no ARGV contract in its header");
        }
    }

    #[test]
    fn the_marks_check_and_the_expiry_copy_live_only_in_the_prelude() {
        for source in [DECIDE, RELEASE, ADMIT, WAITING_ROOM] {
            assert!(source.starts_with(PRELUDE));
        }
        for (name, source) in ALL {
            let body = body(source);
            for repeated in ["'STALE', mark[1]", "redis.call('PEXPIRE', key, ttl)", "redis.call('TIME')"] {
                if name != "rebuild_swap" {
                    assert!(!body.contains(repeated), "{name}.lua repeats `{repeated}` of the prelude");
                }
            }
        }
    }

    /// Redis compiles every script as sent (prelude included): a syntax error
    /// fails here, not on the first record. Needs the stack's Redis
    /// (`FIRSTCOME_REDIS__URL`, `eval "$(stack/bin/stack env)"`).
    #[tokio::test]
    async fn redis_compiles_every_script() {
        use crate::settings::{Environment, Principal, RedisSettings};
        let url = std::env::var("FIRSTCOME_REDIS__URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        // The stack's Redis has ACL users only (stack/redis/users.acl).
        let settings = RedisSettings { url, ..Default::default() }.for_principal(Environment::Local, Principal::ADMIN);
        let mut conn = crate::redis::connect(&settings).await.expect("the stack's Redis");
        for (name, source) in ALL {
            let sha: String = ::redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(source)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(sha, Script::new(source).get_hash(), "{name}");
        }
    }
}
