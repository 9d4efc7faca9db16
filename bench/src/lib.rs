//! Baselines and load tools of the opening-rush drill (`scripts/drill.sh`).
//!
//! - `bare_ingest`: an axum handler of ingest's entry route shape with
//!   nothing behind it (bearer token verified as ingest does, JSON body
//!   parsed, 202 JSON): the HTTP ceiling of this machine, measured in the
//!   same run as ingest so the drill can give ingest's ratio to it.
//! - `mint_tokens`: member tokens for wrk's Lua script (one `member token`
//!   per line), so wrk can rotate members without signing anything itself.
