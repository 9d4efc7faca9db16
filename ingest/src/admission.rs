//! The first-entry decision in Redis: ONE script call per entry request.
//!
//! Eligibility, the member's earlier mark, the stock counter and the new
//! pending mark are read and written atomically, so two concurrent requests
//! of one member can never both be admitted, and a member can never enter
//! after the counter reached zero. The script reads Redis' clock, so every
//! ingest instance admits on one clock (the FCFS order key `accepted_at`).
//!
//! Marks in `entered` (see `platform::event_keys`): `P|<entry>|<ms>` while the
//! entry is being produced, `A|<entry>` once the broker acknowledged it.
//!
//! The scripts are `platform/lua/admit.lua` and `platform/lua/mark_accepted.lua`
//! (KEYS/ARGV contract at their top), handed out by `platform::scripts`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use platform::event_keys::EventKeys;
use redis::aio::ConnectionLike;
use redis::Script;
use tokio::sync::{mpsc, oneshot};

use crate::auth::MemberId;

/// What the admit script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A new entry: the pending mark is set; produce it.
    Accept { entry_id: String, admitted_at_ms: i64 },
    /// A pending mark old enough that its request has surely ended without an
    /// acknowledgement: produce the SAME entry again (consumers dedupe).
    Resume { entry_id: String, admitted_at_ms: i64 },
    /// The member's entry was acknowledged before.
    AlreadyEntered { entry_id: String },
    /// Another request of the member is producing this entry right now.
    InProgress { entry_id: String, retry_after: Duration },
    NotEligible,
    SoldOut,
    Closed,
    TooEarly { opens_in: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected admit script answer {0:?}")]
    Unexpected(String),
}

/// The admission scripts; cheap to clone. `invoke_async` sends EVALSHA and
/// loads the script on NOSCRIPT (a restarted or failed-over Redis).
#[derive(Debug, Clone)]
pub struct Admitter {
    admit: Arc<Script>,
    mark_accepted: Arc<Script>,
    mark_accepted_many: Arc<Script>,
    /// The grouped acknowledgement marks ([`Admitter::mark_accepted_grouped`]),
    /// started on first use.
    marks: Arc<OnceLock<mpsc::Sender<MarkRequest>>>,
    resume_after: Duration,
}

/// One acknowledged entry waiting for its `A|` mark.
#[derive(Debug)]
struct MarkRequest {
    event_id: String,
    member: String,
    entry_id: String,
    done: oneshot::Sender<Result<bool, String>>,
}

/// Most marks written by one script call.
const MAX_MARKS_PER_CALL: usize = 512;
/// Requests waiting for the marks task at most (bounded: a stalled Redis
/// makes the handlers wait, it does not grow a queue).
const MARK_QUEUE: usize = 4_096;

impl Admitter {
    pub fn new(resume_after: Duration) -> Self {
        Self {
            admit: Arc::new(platform::scripts::admit()),
            mark_accepted: Arc::new(platform::scripts::mark_accepted()),
            mark_accepted_many: Arc::new(platform::scripts::mark_accepted_many()),
            marks: Arc::default(),
            resume_after,
        }
    }

    /// Decides whether `member` may enter `event_id`; `new_entry_id` is used
    /// only when a fresh entry is admitted, and only if `admit_new` (false
    /// once this instance knows the event sold out).
    pub async fn admit<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
        member: &MemberId,
        new_entry_id: &str,
        admit_new: bool,
    ) -> Result<Admission, AdmissionError> {
        let keys = EventKeys::new(event_id);
        let (code, entry, at, now): (String, String, i64, i64) = self
            .admit
            .key(&keys.meta)
            .key(&keys.eligible)
            .key(&keys.entered)
            .key(&keys.entries)
            .key(&keys.stock)
            .arg(member.as_str())
            .arg(new_entry_id)
            .arg(self.resume_after.as_millis() as u64)
            .arg(if admit_new { 1 } else { 0 })
            .invoke_async(conn)
            .await?;
        let admission = match code.as_str() {
            "accept" => Admission::Accept { entry_id: entry, admitted_at_ms: at },
            "resume" => Admission::Resume { entry_id: entry, admitted_at_ms: at },
            "already_entered" => Admission::AlreadyEntered { entry_id: entry },
            "in_progress" => {
                let left = (at + self.resume_after.as_millis() as i64 - now).max(0);
                Admission::InProgress { entry_id: entry, retry_after: Duration::from_millis(left as u64) }
            }
            "not_eligible" => Admission::NotEligible,
            "sold_out" => Admission::SoldOut,
            "closed" => Admission::Closed,
            "too_early" => Admission::TooEarly { opens_in: Duration::from_millis((at - now).max(0) as u64) },
            "corrupt_mark" => {
                // Never admit over a mark we cannot read: one entry per member
                // outweighs this member's retry. An operator repairs the mark.
                tracing::error!(event_id, member = %member, mark = %entry, "unreadable first-entry mark");
                Admission::AlreadyEntered { entry_id: String::new() }
            }
            other => return Err(AdmissionError::Unexpected(other.to_string())),
        };
        Ok(admission)
    }

    /// Marks the entry acknowledged (`A|entry`), only if the member's mark is
    /// still this entry's pending mark. `false`: the mark was not there.
    pub async fn mark_accepted<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
        member: &MemberId,
        entry_id: &str,
    ) -> redis::RedisResult<bool> {
        let keys = EventKeys::new(event_id);
        let done: i64 = self
            .mark_accepted
            .key(&keys.entered)
            .arg(member.as_str())
            .arg(entry_id)
            .invoke_async(conn)
            .await?;
        Ok(done == 1)
    }

    /// [`Admitter::mark_accepted`], with the acknowledgements of concurrent
    /// requests grouped: one task writes the marks waiting at the moment in
    /// one script call per event (`mark_accepted_many`), while the next
    /// requests queue behind it. The caller still waits for its own mark, so
    /// the mark is `A|` before the member is answered 202, as before; under
    /// load Redis runs one script per batch instead of one per entry.
    /// The task uses a clone of the first `conn` it is given.
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
            let (tx, rx) = mpsc::channel(MARK_QUEUE);
            tokio::spawn(write_marks(conn.clone(), self.mark_accepted_many.clone(), rx));
            tx
        });
        let (done, answer) = oneshot::channel();
        let request = MarkRequest {
            event_id: event_id.to_string(),
            member: member.as_str().to_string(),
            entry_id: entry_id.to_string(),
            done,
        };
        let closed = || AdmissionError::Unexpected("the accept-mark task has stopped".into());
        queue.send(request).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?.map_err(AdmissionError::Unexpected)
    }
}

/// The grouped marks' task: takes every request waiting (up to
/// [`MAX_MARKS_PER_CALL`]), writes them with one script call per event and
/// answers each request; ends when every [`Admitter`] clone is gone.
async fn write_marks<C: ConnectionLike + Send>(mut conn: C, script: Arc<Script>, mut queue: mpsc::Receiver<MarkRequest>) {
    let mut batch: Vec<MarkRequest> = Vec::with_capacity(MAX_MARKS_PER_CALL);
    while queue.recv_many(&mut batch, MAX_MARKS_PER_CALL).await > 0 {
        batch.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        while !batch.is_empty() {
            let event_id = batch[0].event_id.clone();
            let same = batch.iter().take_while(|r| r.event_id == event_id).count();
            let group: Vec<MarkRequest> = batch.drain(..same).collect();
            let keys = EventKeys::new(&event_id);
            let mut invocation = script.key(&keys.entered);
            for request in &group {
                invocation.arg(&request.member).arg(&request.entry_id);
            }
            let answers: Result<Vec<i64>, redis::RedisError> = invocation.invoke_async(&mut conn).await;
            match answers {
                Ok(answers) if answers.len() == group.len() => {
                    for (request, done) in group.into_iter().zip(answers) {
                        let _ = request.done.send(Ok(done == 1));
                    }
                }
                Ok(answers) => {
                    let error = format!("mark_accepted_many answered {} marks for {}", answers.len(), group.len());
                    for request in group {
                        let _ = request.done.send(Err(error.clone()));
                    }
                }
                Err(error) => {
                    let error = format!("redis: {error}");
                    for request in group {
                        let _ = request.done.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}
