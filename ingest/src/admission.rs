//! The first-entry decision in Redis: one script decides each entry request.
//!
//! Eligibility, the member's earlier mark, the stock counter and the new
//! pending mark are read and written atomically, so two concurrent requests
//! of one member can never both be admitted, and a member can never enter
//! after the counter reached zero. The script reads Redis' clock, so every
//! ingest instance admits on one clock (the FCFS order key `accepted_at`).
//!
//! Under load the requests waiting at the same moment are grouped
//! ([`Admitter::admit_grouped`], [`Admitter::mark_accepted_grouped`]): one
//! task per kind sends one script call per event for all of them, in arrival
//! order, and answers each request; each request still waits for its own
//! answer. Redis then runs a few calls per batch instead of two per entry,
//! which was most of Redis' CPU and a good share of ingest's at ten thousand
//! entries a second. With nothing else waiting, a request is sent
//! alone at once: grouping never adds a wait.
//!
//! Marks in `entered` (see `platform::event_keys`): `P|<entry>|<ms>` while the
//! entry is being produced, `A|<entry>` once the broker acknowledged it.
//!
//! The scripts are `platform/lua/admit.lua` (one or many requests) and
//! `mark_accepted_many.lua` (KEYS/ARGV contract at their top), handed out by
//! `platform::scripts`.
//!
//! A ticket is a promise of a place in line, so it must not be handed out
//! twice when Redis forgets. Two guards:
//! - the admission fence ([`Admitter::with_fence`], setting `replica_acks`):
//!   a call that admitted someone waits until the replicas hold its writes
//!   before any of its entries is produced; a failover then keeps them;
//! - the ticket floor: every instance remembers the highest ticket it was
//!   given per event and hands it to the script, which raises a counter
//!   found below it (a Redis restarted from an AOF that missed its last
//!   second, or a failover without the fence) before taking the next one.
//!   Only tickets of calls that were answered count: a call whose fence did
//!   not hold produced nothing, so if a failover lost its writes nobody holds
//!   its tickets, and a floor raised over them would leave numbers in the
//!   line no entry ever claims, each holding a unit nobody can win.
//! - the floors are shared and a raise settles: each instance announces its
//!   floors on [`TICKET_FLOOR_CHANNEL`] every [`ANNOUNCE_FLOORS_EVERY`]
//!   (`state::sync`) and calls with the highest it knows, so an instance
//!   that gave no ticket in the forgotten span, or was just restarted, still
//!   raises the counter. A call that raises it starts a wait of
//!   [`SETTLE_AFTER_LOSS`] during which nobody new is admitted: the other
//!   instances' calls raise the counter to their own floors (which cover
//!   tickets given since their last announcement) before the next ticket is
//!   taken. Requests wait it out here; the member sees a slower answer, not
//!   an error.
//! - tickets in flight hold the wait: a call answered by Redis whose fence
//!   still waits has tickets that are no floor yet (see above), which a raise
//!   could not cover. While it is in flight ([`InFlight`]), `state::sync`
//!   checks every [`ANNOUNCE_FLOORS_EVERY`] whether the counter went below
//!   them and, if so, keeps the wait going until the call ends: settled, its
//!   floor raises the counter; refused, nobody holds them and no gap is left.
//!
//! [`TICKET_FLOOR_CHANNEL`]: platform::event_keys::TICKET_FLOOR_CHANNEL

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use platform::event_keys::{EventKeys, TicketFloor};
use platform::redis::fence::{FenceError, Moves, ReplicaFence};
use redis::aio::ConnectionLike;
use redis::Script;
use tokio::sync::{mpsc, oneshot};

use crate::auth::MemberId;

/// What the admit script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A new entry: the pending mark is set and its ticket (place in line)
    /// taken; produce it.
    Accept {
        entry_id: String,
        admitted_at_ms: i64,
        ticket: i64,
    },
    /// A pending mark old enough that its request has surely ended without an
    /// acknowledgement: produce the SAME entry again (consumers dedupe).
    Resume {
        entry_id: String,
        admitted_at_ms: i64,
        ticket: i64,
    },
    /// The member's entry was acknowledged before.
    AlreadyEntered {
        entry_id: String,
    },
    /// Another request of the member is producing this entry right now.
    InProgress {
        entry_id: String,
        retry_after: Duration,
    },
    NotEligible,
    SoldOut,
    Closed,
    TooEarly {
        opens_in: Duration,
    },
    /// Redis forgot tickets and the instances are raising its counter: ask
    /// again after `retry_after`. [`Admitter::admit`] and
    /// [`Admitter::admit_grouped`] wait it out themselves.
    Settling {
        retry_after: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected admit script answer {0:?}")]
    Unexpected(String),
    /// The failure of a grouped call, shared by every request in it.
    #[error(transparent)]
    Grouped(Arc<AdmissionError>),
    #[error("the grouped {0} task has stopped")]
    TaskStopped(&'static str),
    /// The admission fence did not hold: nothing admitted in the call is
    /// produced (the member's retry resumes the entry).
    #[error("the admission's writes did not reach the replicas: {0}")]
    Fence(#[from] FenceError),
    /// Redis forgot tickets and the counter was still being raised after
    /// [`MAX_SETTLE_WAITS`] waits (instances raising it again and again).
    #[error("the ticket counter is still being raised after a loss of Redis writes")]
    Settling,
}

/// One request's part of an admit call.
#[derive(Debug)]
struct AdmitQuery {
    member: String,
    new_entry_id: String,
    admit_new: bool,
}

/// One acknowledged entry's part of a mark call.
#[derive(Debug)]
struct MarkQuery {
    member: String,
    entry_id: String,
}

/// A request waiting in a grouped task's queue for its answer.
#[derive(Debug)]
struct Pending<Q, A> {
    event_id: String,
    query: Q,
    done: oneshot::Sender<Result<A, AdmissionError>>,
}

type Queue<Q, A> = Arc<OnceLock<mpsc::Sender<Pending<Q, A>>>>;

/// The admission scripts; cheap to clone. `invoke_async` sends EVALSHA and
/// loads the script on NOSCRIPT (a restarted or failed-over Redis).
#[derive(Debug, Clone)]
pub struct Admitter {
    admit: AdmitCall,
    mark_accepted_many: Arc<Script>,
    /// The grouped admissions and acknowledgement marks, each task started
    /// on first use.
    admits: Queue<AdmitQuery, Admission>,
    marks: Queue<MarkQuery, bool>,
}

/// The highest ticket known to be held per event: given out by this
/// instance in an answered call, or announced by another instance. A few
/// events at a time: the map is emptied when it grows past
/// [`MAX_EVENTS_SEEN`], losing only floors. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct TicketFloors(Arc<Mutex<Floors>>);

#[derive(Debug, Default)]
struct Floors {
    highest: HashMap<String, i64>,
    /// Events whose floor this instance raised since it last announced it.
    unannounced: HashSet<String>,
    /// The calls answered but not settled yet (their fence still waits):
    /// id → (event, highest ticket they were given). Not floors: the fence
    /// may fail and nobody hold them (see [`InFlight`]).
    in_flight: HashMap<u64, (String, i64)>,
    next_in_flight: u64,
}

/// The tickets of an admit call answered by Redis whose fence has not held
/// yet, for as long as it lives. While they are in flight, a counter found
/// below them means Redis forgot them, and `state::sync` keeps new
/// admissions waiting (`platform/lua/hold_settle.lua`) until the call is
/// settled: its tickets then become this instance's floor, which raises the
/// counter. Dropped when the call ends however it ends, a request given up
/// included.
#[derive(Debug)]
pub struct InFlight {
    floors: TicketFloors,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.floors.lock().in_flight.remove(&self.id);
    }
}

const MAX_EVENTS_SEEN: usize = 1_024;

/// How long a raise of a counter that went back keeps new admissions
/// waiting: long enough for every instance under load to make a call with
/// its own floor (calls follow each other within milliseconds), short
/// enough that a member hardly notices.
pub const SETTLE_AFTER_LOSS: Duration = Duration::from_millis(250);
/// A request waits through this many settling answers at most, then 503.
pub const MAX_SETTLE_WAITS: u32 = 8;
/// Each instance announces the floors it raised this often: an instance
/// that gave no ticket in a forgotten span still knows the others' up to
/// this long before it.
pub const ANNOUNCE_FLOORS_EVERY: Duration = Duration::from_millis(50);

impl TicketFloors {
    /// The highest ticket known for `event_id` (0: none).
    pub fn floor(&self, event_id: &str) -> i64 {
        self.lock().highest.get(event_id).copied().unwrap_or(0)
    }

    /// Another instance announced `floor.ticket`: calls send at least it.
    pub fn learn(&self, floor: &TicketFloor) {
        self.lock().raise(&floor.event_id, floor.ticket);
    }

    /// The floors raised by this instance's answers since the last call, to
    /// announce.
    pub fn take_unannounced(&self) -> Vec<TicketFloor> {
        let mut floors = self.lock();
        let events: Vec<String> = floors.unannounced.drain().collect();
        events
            .into_iter()
            .filter_map(|event_id| {
                let ticket = floors.highest.get(&event_id).copied()?;
                Some(TicketFloor { event_id, ticket })
            })
            .collect()
    }

    /// Tickets up to `ticket` of `event_id` are in flight until the guard is
    /// dropped.
    pub fn hold_in_flight(&self, event_id: &str, ticket: i64) -> InFlight {
        let mut floors = self.lock();
        let id = floors.next_in_flight;
        floors.next_in_flight += 1;
        floors.in_flight.insert(id, (event_id.to_string(), ticket));
        InFlight { floors: self.clone(), id }
    }

    /// The highest ticket in flight per event (`hold_settle` keeps new
    /// admissions waiting while a counter is below it).
    pub fn in_flight(&self) -> Vec<TicketFloor> {
        let floors = self.lock();
        let mut highest: HashMap<&str, i64> = HashMap::new();
        for (event_id, ticket) in floors.in_flight.values() {
            let high = highest.entry(event_id.as_str()).or_default();
            *high = (*high).max(*ticket);
        }
        highest.into_iter().map(|(event_id, ticket)| TicketFloor { event_id: event_id.to_string(), ticket }).collect()
    }

    /// A floor whose announcement failed: announced again next time.
    pub fn give_back(&self, floor: &TicketFloor) {
        self.lock().unannounced.insert(floor.event_id.clone());
    }

    /// An answered call held tickets up to `highest`: the floor rises to it.
    fn raise_to(&self, event_id: &str, highest: i64) {
        let mut floors = self.lock();
        if floors.raise(event_id, highest) {
            floors.unannounced.insert(event_id.to_string());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Floors> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Floors {
    /// Raises `event_id`'s floor to `ticket`; true when it rose.
    fn raise(&mut self, event_id: &str, ticket: i64) -> bool {
        if self.highest.len() >= MAX_EVENTS_SEEN && !self.highest.contains_key(event_id) {
            self.highest.clear();
            self.unannounced.clear();
        }
        let floor = self.highest.entry(event_id.to_string()).or_default();
        let rose = ticket > *floor;
        *floor = (*floor).max(ticket);
        rose
    }
}

/// What one admit call needs besides its queries.
#[derive(Debug, Clone)]
struct AdmitCall {
    script: Arc<Script>,
    resume_after: Duration,
    fence: Option<ReplicaFence>,
    /// The highest ticket known to be held, per event: the floor the
    /// script raises a counter that went back to.
    floors: TicketFloors,
}

/// An admitted entry the broker never acknowledged becomes a hole this many
/// times `resume_after` after its admission (or its member's last retry): the
/// stock stage then passes its place on. Twice: a retry that resumes it has
/// had a full `resume_after` to come back and be acknowledged.
pub const HOLE_AFTER_RESUMES: u32 = 2;

/// Most requests answered by one script call.
const MAX_PER_CALL: usize = 512;
/// Requests waiting for a grouped task at most (bounded: a stalled Redis
/// makes the handlers wait, it does not grow a queue).
const QUEUE_BOUND: usize = 4_096;

impl Admitter {
    pub fn new(resume_after: Duration) -> Self {
        Self {
            admit: AdmitCall {
                script: Arc::new(platform::scripts::admit()),
                resume_after,
                fence: None,
                floors: TicketFloors::default(),
            },
            mark_accepted_many: Arc::new(platform::scripts::mark_accepted_many()),
            admits: Arc::default(),
            marks: Arc::default(),
        }
    }

    /// Produces no entry a failover could lose the ticket of: a call that
    /// admitted someone waits until `fence.replicas` replicas hold its
    /// writes, and fails (503; the member's retry resumes) when they do not.
    pub fn with_fence(mut self, fence: Option<ReplicaFence>) -> Self {
        self.admit.fence = fence;
        self
    }

    /// The highest ticket known to be held for `event_id` (handed out by
    /// this instance in an answered call, or announced by another): the
    /// floor its next admit call sends.
    pub fn ticket_floor(&self, event_id: &str) -> i64 {
        self.admit.floors.floor(event_id)
    }

    /// The floors, shared with the task that announces and learns them.
    pub fn floors(&self) -> TicketFloors {
        self.admit.floors.clone()
    }

    /// Decides whether `member` may enter `event_id`, in a call of its own;
    /// `new_entry_id` is used only when a fresh entry is admitted, and only if
    /// `admit_new` (false once this instance knows the event sold out).
    pub async fn admit<C: ConnectionLike + Moves + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
        member: &MemberId,
        new_entry_id: &str,
        admit_new: bool,
    ) -> Result<Admission, AdmissionError> {
        let mut waits = 0;
        loop {
            let query =
                AdmitQuery { member: member.as_str().to_string(), new_entry_id: new_entry_id.to_string(), admit_new };
            let mut answers = self.admit.run(conn, event_id, &[query]).await?;
            let answer = answers.pop().ok_or_else(|| AdmissionError::Unexpected("no answer".into()))?;
            match settle_wait(event_id, &answer, &mut waits)? {
                Some(retry_after) => tokio::time::sleep(retry_after).await,
                None => return Ok(answer),
            }
        }
    }

    /// [`Admitter::admit`], with the requests waiting at the same moment
    /// decided in one script call per event (in the order they arrived).
    /// The task uses a clone of the first `conn` it is given.
    pub async fn admit_grouped<C>(
        &self,
        conn: &C,
        event_id: &str,
        member: &MemberId,
        new_entry_id: &str,
        admit_new: bool,
    ) -> Result<Admission, AdmissionError>
    where
        C: ConnectionLike + Moves + Clone + Send + Sync + 'static,
    {
        let queue = self.admits.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_BOUND);
            let (call, conn) = (self.admit.clone(), conn.clone());
            tokio::spawn(serve_grouped(rx, move |event_id, queries| {
                let (call, mut conn) = (call.clone(), conn.clone());
                async move { call.run(&mut conn, &event_id, &queries).await }
            }));
            tx
        });
        let mut waits = 0;
        loop {
            let query =
                AdmitQuery { member: member.as_str().to_string(), new_entry_id: new_entry_id.to_string(), admit_new };
            let answer = ask(queue, "admit", event_id, query).await?;
            match settle_wait(event_id, &answer, &mut waits)? {
                // The request waits on its own: the grouped task goes on.
                Some(retry_after) => tokio::time::sleep(retry_after).await,
                None => return Ok(answer),
            }
        }
    }

    /// Marks the entry acknowledged (`A|entry`), only if the member's mark is
    /// still this entry's pending mark (`false`: it was not there), with the
    /// acknowledgements waiting at the same moment written in one
    /// `mark_accepted_many` call per event. The caller still waits for its
    /// own mark, so the mark is `A|` before the member is answered 202. The
    /// task uses a clone of the first `conn` it is given.
    pub async fn mark_accepted_grouped<C>(
        &self,
        conn: &C,
        event_id: &str,
        member: &MemberId,
        entry_id: &str,
    ) -> Result<bool, AdmissionError>
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        let queue = self.marks.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_BOUND);
            let (script, conn) = (self.mark_accepted_many.clone(), conn.clone());
            tokio::spawn(serve_grouped(rx, move |event_id, queries| {
                let (script, mut conn) = (script.clone(), conn.clone());
                async move { mark_call(&script, &mut conn, &event_id, &queries).await }
            }));
            tx
        });
        let query = MarkQuery { member: member.as_str().to_string(), entry_id: entry_id.to_string() };
        ask(queue, "mark", event_id, query).await
    }
}

/// How long to wait before asking again when `answer` is a settling one
/// (`None`: it is the request's answer); counts the waits and refuses past
/// [`MAX_SETTLE_WAITS`].
fn settle_wait(event_id: &str, answer: &Admission, waits: &mut u32) -> Result<Option<Duration>, AdmissionError> {
    let Admission::Settling { retry_after } = answer else { return Ok(None) };
    *waits += 1;
    metrics::counter!("firstcome_ingest_settle_waits_total").increment(1);
    if *waits > MAX_SETTLE_WAITS {
        tracing::warn!(event_id, waits = *waits - 1, "ticket counter still settling: answering 503");
        return Err(AdmissionError::Settling);
    }
    if *waits == 1 {
        tracing::info!(event_id, ?retry_after, "Redis forgot tickets: waiting while the instances raise the counter");
    }
    // A key that lost its expiry must not hold a request longer than a window.
    Ok(Some((*retry_after).clamp(Duration::from_millis(1), SETTLE_AFTER_LOSS)))
}

/// Puts one request in a grouped task's queue and waits for its answer.
async fn ask<Q, A>(
    queue: &mpsc::Sender<Pending<Q, A>>,
    task: &'static str,
    event_id: &str,
    query: Q,
) -> Result<A, AdmissionError> {
    let (done, answer) = oneshot::channel();
    let pending = Pending { event_id: event_id.to_string(), query, done };
    queue.send(pending).await.map_err(|_| AdmissionError::TaskStopped(task))?;
    answer.await.map_err(|_| AdmissionError::TaskStopped(task))?
}

/// A grouped task: takes every request waiting (up to [`MAX_PER_CALL`]),
/// makes one `call` per event with their queries in arrival order (a stable
/// sort by event), and answers each request; ends when every sender is gone.
async fn serve_grouped<Q, A, F, Fut>(mut queue: mpsc::Receiver<Pending<Q, A>>, mut call: F)
where
    F: FnMut(String, Vec<Q>) -> Fut,
    Fut: Future<Output = Result<Vec<A>, AdmissionError>>,
{
    let mut batch: Vec<Pending<Q, A>> = Vec::with_capacity(MAX_PER_CALL);
    while queue.recv_many(&mut batch, MAX_PER_CALL).await > 0 {
        batch.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        while !batch.is_empty() {
            let event_id = batch[0].event_id.clone();
            let same = batch.iter().take_while(|p| p.event_id == event_id).count();
            let (queries, waiting): (Vec<Q>, Vec<_>) = batch.drain(..same).map(|p| (p.query, p.done)).unzip();
            let asked = queries.len();
            match call(event_id, queries).await {
                Ok(answers) if answers.len() == asked => {
                    for (done, answer) in waiting.into_iter().zip(answers) {
                        let _ = done.send(Ok(answer));
                    }
                }
                Ok(answers) => {
                    let error = Arc::new(AdmissionError::Unexpected(format!("{} answers for {asked}", answers.len())));
                    for done in waiting {
                        let _ = done.send(Err(AdmissionError::Grouped(error.clone())));
                    }
                }
                Err(error) => {
                    let error = Arc::new(error);
                    for done in waiting {
                        let _ = done.send(Err(AdmissionError::Grouped(error.clone())));
                    }
                }
            }
        }
    }
}

impl AdmitCall {
    /// One admit script call for `queries` of one event, fenced when it
    /// admitted someone.
    async fn run<C: ConnectionLike + Moves + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
        queries: &[AdmitQuery],
    ) -> Result<Vec<Admission>, AdmissionError> {
        // Taken before the writes: a move after it voids the fence.
        let moves = self.fence.and_then(|_| conn.moves());
        let answers =
            admit_call(&self.script, self.resume_after, conn, event_id, queries, self.floors.floor(event_id)).await?;
        let highest = highest_ticket(&answers);
        // Held until the floor is raised: not a floor before the fence
        // holds, yet not to be given again if Redis forgets them meanwhile.
        let mut _in_flight = None;
        if let (Some(fence), Some(highest)) = (self.fence, highest) {
            if answers.iter().any(|answer| matches!(answer, Admission::Accept { .. })) {
                _in_flight = Some(self.floors.hold_in_flight(event_id, highest));
                if let Err(error) = fence.hold(conn, moves.as_ref()).await {
                    metrics::counter!("firstcome_ingest_fence_refusals_total").increment(1);
                    tracing::warn!(event_id, %error, requests = queries.len(), "admission fence did not hold: answering 503");
                    // Not raised by these tickets (see the module's comment).
                    return Err(error.into());
                }
            }
        }
        if let Some(highest) = highest {
            self.floors.raise_to(event_id, highest);
        }
        Ok(answers)
    }
}

/// The highest ticket `answers` hold, given now or resumed.
fn highest_ticket(answers: &[Admission]) -> Option<i64> {
    answers
        .iter()
        .filter_map(|answer| match answer {
            Admission::Accept { ticket, .. } | Admission::Resume { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .max()
}

/// One admit script call for `queries` of one event; `ticket_floor` is the
/// highest ticket this instance was given (see the module's comment).
async fn admit_call<C: ConnectionLike + Send>(
    script: &Script,
    resume_after: Duration,
    conn: &mut C,
    event_id: &str,
    queries: &[AdmitQuery],
    ticket_floor: i64,
) -> Result<Vec<Admission>, AdmissionError> {
    let keys = EventKeys::new(event_id);
    let mut invocation = script.key(&keys.meta);
    invocation
        .key(&keys.eligible)
        .key(&keys.entered)
        .key(&keys.entries)
        .key(&keys.ticket)
        .key(&keys.tickets)
        .key(&keys.frontier)
        .key(&keys.pending)
        .key(&keys.holes)
        .key(&keys.settle);
    invocation
        .arg(resume_after.as_millis() as u64)
        .arg((resume_after * HOLE_AFTER_RESUMES).as_millis() as u64)
        .arg(platform::event_keys::STATE_CHANNEL)
        .arg(event_id)
        .arg(ticket_floor)
        .arg(SETTLE_AFTER_LOSS.as_millis() as u64);
    for query in queries {
        invocation.arg(&query.member).arg(&query.new_entry_id).arg(if query.admit_new { 1 } else { 0 });
    }
    let answers: Vec<(String, String, i64, i64, i64)> = invocation.invoke_async(conn).await?;
    answers
        .into_iter()
        .zip(queries)
        .map(|((code, entry, at, now, ticket), query)| {
            admission_of(&code, Answer { entry, at, now, ticket }, resume_after, event_id, query)
        })
        .collect()
}

/// One request's answer of the admit script, as sent.
struct Answer {
    entry: String,
    at: i64,
    now: i64,
    ticket: i64,
}

/// One request's answer of the admit script.
fn admission_of(
    code: &str,
    Answer { entry, at, now, ticket }: Answer,
    resume_after: Duration,
    event_id: &str,
    query: &AdmitQuery,
) -> Result<Admission, AdmissionError> {
    let admission = match code {
        "accept" => Admission::Accept { entry_id: entry, admitted_at_ms: at, ticket },
        "resume" => Admission::Resume { entry_id: entry, admitted_at_ms: at, ticket },
        "already_entered" => Admission::AlreadyEntered { entry_id: entry },
        "in_progress" => {
            let left = (at + resume_after.as_millis() as i64 - now).max(0);
            Admission::InProgress { entry_id: entry, retry_after: Duration::from_millis(left as u64) }
        }
        "not_eligible" => Admission::NotEligible,
        "sold_out" => Admission::SoldOut,
        "closed" => Admission::Closed,
        "too_early" => Admission::TooEarly { opens_in: Duration::from_millis((at - now).max(0) as u64) },
        "settling" => Admission::Settling { retry_after: Duration::from_millis(at.max(0) as u64) },
        "corrupt_mark" => {
            // Never admit over a mark we cannot read: one entry per member
            // outweighs this member's retry. An operator repairs the mark.
            tracing::error!(event_id, member = %query.member, mark = %entry, "unreadable first-entry mark");
            Admission::AlreadyEntered { entry_id: String::new() }
        }
        other => return Err(AdmissionError::Unexpected(other.to_string())),
    };
    Ok(admission)
}

/// One `mark_accepted_many` call for `queries` of one event.
async fn mark_call<C: ConnectionLike + Send>(
    script: &Script,
    conn: &mut C,
    event_id: &str,
    queries: &[MarkQuery],
) -> Result<Vec<bool>, AdmissionError> {
    let keys = EventKeys::new(event_id);
    let mut invocation = script.key(&keys.entered);
    invocation.key(&keys.pending);
    for query in queries {
        invocation.arg(&query.member).arg(&query.entry_id);
    }
    let answers: Vec<i64> = invocation.invoke_async(conn).await?;
    Ok(answers.into_iter().map(|done| done == 1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(ticket: i64) -> Admission {
        Admission::Accept { entry_id: format!("e-{ticket}"), admitted_at_ms: 0, ticket }
    }

    #[test]
    fn tickets_in_flight_are_held_until_their_guard_drops_and_are_no_floor() {
        let floors = TicketFloors::default();
        let first = floors.hold_in_flight("ev", 5);
        let second = floors.hold_in_flight("ev", 9);
        let other = floors.hold_in_flight("other", 2);
        let mut held = floors.in_flight();
        held.sort_by(|x, y| x.event_id.cmp(&y.event_id));
        assert_eq!(
            held,
            [TicketFloor { event_id: "ev".into(), ticket: 9 }, TicketFloor { event_id: "other".into(), ticket: 2 }]
        );
        assert_eq!(floors.floor("ev"), 0, "in flight is not a floor: the fence may fail");
        drop(second);
        let mut held = floors.in_flight();
        held.sort_by(|x, y| x.event_id.cmp(&y.event_id));
        assert_eq!(held[0], TicketFloor { event_id: "ev".into(), ticket: 5 }, "the other call still holds 5");
        drop((first, other));
        assert!(floors.in_flight().is_empty());
    }

    #[test]
    fn only_floors_this_instance_raised_are_announced_and_once() {
        let floors = TicketFloors::default();
        floors.raise_to("ev", highest_ticket(&[accept(3), Admission::SoldOut, accept(5)]).expect("tickets"));
        floors.learn(&TicketFloor { event_id: "other".into(), ticket: 9 });
        assert_eq!(floors.take_unannounced(), vec![TicketFloor { event_id: "ev".into(), ticket: 5 }]);
        assert!(floors.take_unannounced().is_empty(), "announced once");
        assert_eq!(floors.floor("other"), 9, "a learnt floor is sent, not announced again");
    }

    #[test]
    fn a_floor_never_goes_down_and_a_lower_answer_is_not_news() {
        let floors = TicketFloors::default();
        floors.learn(&TicketFloor { event_id: "ev".into(), ticket: 10 });
        floors.raise_to("ev", 4);
        assert_eq!(floors.floor("ev"), 10);
        assert!(floors.take_unannounced().is_empty(), "4 is below what is known");
        floors.learn(&TicketFloor { event_id: "ev".into(), ticket: 2 });
        assert_eq!(floors.floor("ev"), 10);
    }

    #[test]
    fn a_failed_announcement_is_made_again() {
        let floors = TicketFloors::default();
        floors.raise_to("ev", 7);
        let taken = floors.take_unannounced();
        taken.iter().for_each(|floor| floors.give_back(floor));
        assert_eq!(floors.take_unannounced(), taken);
    }

    #[test]
    fn a_settling_answer_waits_at_most_a_window_then_refuses() {
        let mut waits = 0;
        let long = Admission::Settling { retry_after: Duration::from_secs(3_600) };
        assert_eq!(settle_wait("ev", &long, &mut waits).ok().flatten(), Some(SETTLE_AFTER_LOSS));
        assert_eq!(settle_wait("ev", &accept(1), &mut waits).ok().flatten(), None);
        for _ in 1..MAX_SETTLE_WAITS {
            assert!(settle_wait("ev", &long, &mut waits).is_ok());
        }
        assert!(matches!(settle_wait("ev", &long, &mut waits), Err(AdmissionError::Settling)));
    }
}
