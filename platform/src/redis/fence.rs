//! The replica fence: writes a decision rests on reach the replicas before
//! anyone is told of it.
//!
//! A Sentinel failover promotes a replica, and the writes the old primary
//! had not passed on are gone. For the stock stage that is a decision the
//! log holds but Redis lost; for ingest a ticket handed out twice. `WAIT`
//! blocks until the given number of replicas acknowledged every write this
//! client made, so a write acknowledged by the fence survives the failover
//! of its primary to any of them (Sentinel promotes the replica furthest
//! along).
//!
//! `WAIT` speaks for the connection it is sent on. A connection that moved
//! to another primary between the writes and the `WAIT` would wait on a node
//! that never saw them, and pass at once: the caller hands in the
//! connection's moves ([`super::Connection::moves`]) as seen before the
//! writes, and a move voids the fence.

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use tokio::sync::watch;

/// How many replicas must hold a write before it is acted on, and how long
/// to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaFence {
    pub replicas: u32,
    pub timeout: Duration,
}

/// Why the fence did not hold: the writes may be lost in a failover.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("Redis moved to another primary while the writes were made: they may be on the old one")]
    Moved,
    #[error("{acked} of {wanted} replicas acknowledged the writes within {timeout:?}")]
    TooFewReplicas { acked: u32, wanted: u32, timeout: Duration },
    #[error("waiting for the replicas (WAIT): {0}")]
    Redis(#[from] redis::RedisError),
}

/// A connection that can say whether it moved to another primary since a
/// point in time: [`super::Connection`] through Sentinel does; a direct
/// connection cannot move.
pub trait Moves {
    /// A watch of the connection's moves, `None` if it cannot move.
    fn moves(&self) -> Option<watch::Receiver<u64>>;
}

impl Moves for super::Connection {
    fn moves(&self) -> Option<watch::Receiver<u64>> {
        Some(super::Connection::moves(self))
    }
}

impl Moves for redis::aio::MultiplexedConnection {
    fn moves(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

impl ReplicaFence {
    /// The fence of a setting: `None` when `replicas` is 0 (off).
    pub fn of(replicas: u32, timeout: Duration) -> Option<Self> {
        (replicas > 0).then_some(Self { replicas, timeout })
    }

    /// Waits until the replicas hold every write made on `conn`; `moves` is
    /// the connection's watch taken before the writes. Returns how long it
    /// waited.
    pub async fn hold<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        moves: Option<&watch::Receiver<u64>>,
    ) -> Result<Duration, FenceError> {
        if moves.is_some_and(|moves| moves.has_changed().unwrap_or(true)) {
            return Err(FenceError::Moved);
        }
        let started = Instant::now();
        let acked: u32 =
            redis::cmd("WAIT").arg(self.replicas).arg(self.timeout.as_millis() as u64).query_async(conn).await?;
        // A move while waiting: the answer may be the new primary's.
        if moves.is_some_and(|moves| moves.has_changed().unwrap_or(true)) {
            return Err(FenceError::Moved);
        }
        match acked >= self.replicas {
            true => Ok(started.elapsed()),
            false => Err(FenceError::TooFewReplicas { acked, wanted: self.replicas, timeout: self.timeout }),
        }
    }
}
