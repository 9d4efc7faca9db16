//! Keeps the [`EventCache`] current on every ingest instance.
//!
//! Sell-out must reach every instance within a second, so each one holds a
//! dedicated pub/sub connection on [`STATE_CHANNEL`]. Pub/sub is fire-and-
//! forget (a message sent while the connection is down is lost), hence:
//! the connection is pinged and re-established with backoff, every
//! re-subscription triggers a full re-read, and a periodic re-read of every
//! known event runs anyway as the safety net.
//!
//! The same connection learns the other instances' ticket floors on
//! [`TICKET_FLOOR_CHANNEL`], and a third loop announces this instance's
//! (see `admission`, "the floors are shared") and holds new admissions while
//! Redis forgot tickets of a call still in flight here. A floor missed while
//! disconnected costs nothing until Redis forgets tickets, and then only
//! those given since the other instance's next announcement.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use platform::event_keys::{EventKeys, StateChange, TicketFloor, STATE_CHANNEL, TICKET_FLOOR_CHANNEL};
use platform::redis::Connection as ConnectionManager;
use redis::aio::PubSub;
use redis::Script;
use tokio::sync::Notify;
use tokio::time::{interval, timeout, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::EventCache;
use crate::admission::{TicketFloors, ANNOUNCE_FLOORS_EVERY, SETTLE_AFTER_LOSS};

/// A silent connection is checked this often (a dead TCP peer sends nothing).
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long a ping or a (re)connection may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The pub/sub listener and the periodic re-read, started by the application.
pub struct StateSync {
    cache: EventCache,
    floors: TicketFloors,
    client: platform::redis::PubSubClient,
    conn: ConnectionManager,
    refresh_every: Duration,
    /// Subscribed at construction, so no change published after `connect`
    /// returns is missed (messages wait in the connection's buffer).
    pubsub: Option<PubSub>,
}

impl StateSync {
    /// Subscribes now; fails when Redis is unreachable at start.
    pub async fn connect(
        cache: EventCache,
        floors: TicketFloors,
        client: platform::redis::PubSubClient,
        conn: ConnectionManager,
        refresh_every: Duration,
    ) -> redis::RedisResult<Self> {
        let pubsub = subscribe(&client).await?;
        Ok(Self { cache, floors, client, conn, refresh_every, pubsub: Some(pubsub) })
    }

    /// Runs the three loops until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let refresh_now = Arc::new(Notify::new());
        let listener = listen(
            self.pubsub,
            self.client,
            self.cache.clone(),
            self.floors.clone(),
            refresh_now.clone(),
            shutdown.clone(),
        );
        let announcer = announce_floors(self.conn.clone(), self.floors, shutdown.clone());
        let refresher = refresh(self.conn, self.cache, self.refresh_every, refresh_now, shutdown);
        tokio::join!(listener, announcer, refresher);
        tracing::debug!("event state sync stopped");
    }
}

async fn subscribe(client: &platform::redis::PubSubClient) -> redis::RedisResult<PubSub> {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&[STATE_CHANNEL, TICKET_FLOOR_CHANNEL]).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match timeout(CALL_TIMEOUT, connect).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "pub/sub subscription timed out",
        ))),
    }
}

async fn listen(
    mut pubsub: Option<PubSub>,
    client: platform::redis::PubSubClient,
    cache: EventCache,
    floors: TicketFloors,
    refresh_now: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let connection = match pubsub.take() {
            Some(connection) => connection,
            None => {
                // Each reconnection starts again from the shortest wait.
                let subscribed = platform::retry::until_stopped(
                    platform::retry::doubling(BACKOFF_MIN, BACKOFF_MAX),
                    &shutdown,
                    || subscribe(&client),
                    |_| true,
                    |error, retry_in| tracing::warn!(%error, ?retry_in, "event state subscription failed"),
                )
                .await;
                // Every error is retried: the only end without a connection is a stop.
                let Some(Ok(connection)) = subscribed else { return };
                tracing::info!(channel = STATE_CHANNEL, "re-subscribed to event state changes");
                metrics::counter!("firstcome_ingest_state_resubscribes_total").increment(1);
                // Changes published while disconnected are lost: re-read everything.
                refresh_now.notify_one();
                connection
            }
        };
        let (mut sink, mut stream) = connection.split();
        let mut ping = interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                message = stream.next() => match message {
                    Some(message) if message.get_channel_name() == TICKET_FLOOR_CHANNEL => on_floor(&floors, &message),
                    Some(message) => on_message(&cache, &message),
                    None => {
                        tracing::warn!("event state subscription lost");
                        break;
                    }
                },
                _ = ping.tick() => {
                    if !matches!(timeout(CALL_TIMEOUT, sink.ping::<redis::Value>()).await, Ok(Ok(_))) {
                        tracing::warn!("event state subscription does not answer pings");
                        break;
                    }
                }
            }
        }
    }
}

fn on_message(cache: &EventCache, message: &redis::Msg) {
    let change = match std::str::from_utf8(message.get_payload_bytes())
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str::<StateChange>(text).map_err(|e| e.to_string()))
    {
        Ok(change) => change,
        Err(error) => {
            tracing::warn!(%error, "ignored a malformed event state message");
            metrics::counter!("firstcome_ingest_state_changes_total", "status" => "malformed").increment(1);
            return;
        }
    };
    let known = cache.apply(&change);
    tracing::info!(event_id = %change.event_id, status = change.status.as_str(), known, "event state changed");
    metrics::counter!("firstcome_ingest_state_changes_total", "status" => change.status.as_str()).increment(1);
}

fn on_floor(floors: &TicketFloors, message: &redis::Msg) {
    match serde_json::from_slice::<TicketFloor>(message.get_payload_bytes()) {
        Ok(floor) => floors.learn(&floor),
        Err(error) => {
            tracing::warn!(%error, "ignored a malformed ticket floor message");
            metrics::counter!("firstcome_ingest_state_changes_total", "status" => "malformed").increment(1);
        }
    }
}

/// Announces the floors this instance raised, every [`ANNOUNCE_FLOORS_EVERY`]
/// (nothing when none rose: an idle instance publishes nothing), and holds
/// new admissions where Redis forgot tickets of a call still in flight
/// ([`hold_settles`]). A failed publish gives the floors back, so the next
/// tick tries again.
async fn announce_floors(mut conn: ConnectionManager, floors: TicketFloors, shutdown: CancellationToken) {
    let hold_settle = platform::scripts::hold_settle();
    let mut tick = interval(ANNOUNCE_FLOORS_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        hold_settles(&mut conn, &hold_settle, &floors).await;
        let raised = floors.take_unannounced();
        if raised.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for floor in &raised {
            match serde_json::to_string(floor) {
                Ok(text) => {
                    pipe.publish(TICKET_FLOOR_CHANNEL, text).ignore();
                }
                Err(error) => tracing::warn!(%error, "a ticket floor could not be encoded"),
            }
        }
        match timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            outcome => {
                let error = match outcome {
                    Ok(Err(error)) => error.to_string(),
                    _ => "timed out".to_string(),
                };
                tracing::warn!(%error, floors = raised.len(), "ticket floors not announced: trying again");
                raised.iter().for_each(|floor| floors.give_back(floor));
            }
        }
    }
}

/// For each event with tickets in flight on this instance (an admit call
/// answered whose fence still waits, see `admission::InFlight`): if the
/// counter went below them, Redis forgot them, and nobody new is admitted for
/// [`SETTLE_AFTER_LOSS`] more. Each tick renews it, so the wait lasts until
/// the call is settled (its floor then raises the counter) or refused (nobody
/// holds its tickets), never long enough for another instance to give them.
async fn hold_settles(conn: &mut ConnectionManager, script: &Script, floors: &TicketFloors) {
    for in_flight in floors.in_flight() {
        let keys = EventKeys::new(&in_flight.event_id);
        let mut invocation = script.key(&keys.ticket);
        invocation.key(&keys.settle).arg(in_flight.ticket).arg(SETTLE_AFTER_LOSS.as_millis() as u64);
        match timeout(CALL_TIMEOUT, invocation.invoke_async::<i64>(conn)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(_)) => {
                metrics::counter!("firstcome_ingest_settle_holds_total").increment(1);
                tracing::info!(
                    event_id = %in_flight.event_id,
                    ticket = in_flight.ticket,
                    "Redis forgot tickets still in flight here: admissions wait"
                );
            }
            Ok(Err(error)) => tracing::warn!(%error, event_id = %in_flight.event_id, "tickets in flight not held"),
            Err(_) => tracing::warn!(event_id = %in_flight.event_id, "tickets in flight not held: timed out"),
        }
    }
}

async fn refresh(
    mut conn: ConnectionManager,
    cache: EventCache,
    every: Duration,
    refresh_now: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut tick = interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = refresh_now.notified() => {}
            _ = tick.tick() => {}
        }
        match timeout(every.max(CALL_TIMEOUT), cache.refresh_all(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "event state re-read failed"),
            Err(_) => tracing::warn!("event state re-read timed out"),
        }
    }
}
