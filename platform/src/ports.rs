//! A port for a child process to listen on, picked by whoever starts it
//! (the chaos suite, tests that spawn services).
//!
//! Port 0's answer comes from the ephemeral range, which the kernel also
//! hands to every outgoing connection: between the pick and the child's bind,
//! a Kafka or Redis client of the same machine can take it ("Address already
//! in use"; the chaos suite met it). So the pick comes from below that range,
//! where only listeners go.

use std::net::TcpListener;

/// Where picks come from: below Linux's default ephemeral range (32768–60999)
/// and above every port of the local stack (the highest: Sentinels, 26380–26382).
const PICKS: std::ops::Range<u16> = 27_000..32_700;

/// A port nothing listens on now, outside the ephemeral range.
pub fn unused_port() -> std::io::Result<u16> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut last = None;
    for _ in 0..200 {
        let port = rng.random_range(PICKS);
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return Ok(listener.local_addr()?.port()),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port to pick")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pick_is_free_and_outside_the_ephemeral_range() {
        let port = unused_port().expect("a port");
        assert!(PICKS.contains(&port), "{port}");
        TcpListener::bind(("127.0.0.1", port)).expect("still free");
    }
}
