//! The state machine's property: a random sequence of transitions (two workers racing
//! with stale leases, the API, the sweep, the webhook publisher with stale reads, and
//! clock jumps past leases) applied to a store and to the specification
//! ([`Transition::next`]) gives the same outcome at every step: the same refusal
//! (with the same current job) or the same job after the write. At the end of each
//! sequence the store's indexes hold what the jobs imply: the sweep finds every
//! unfinished job and every due event and no finished job with an empty outbox, and
//! on DynamoDB each item's index keys are the ones the job implies.
//!
//! Sequences run through proptest, which shrinks a failure to a short sequence. Cases
//! per run: 48, or `PROPTEST_CASES`. The sequences are the same every run (a fixed
//! seed, so that CI is reproducible); `PROPTEST_RNG_SEED=<u64>` explores others.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use offpath_core::transition::Next;
use offpath_core::{
    End, ErrorInfo, EventKind, Job, JobId, JobStore, Lease, NewJob, Settle, StoreError, Transition,
    Webhook,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use crate::stack::{Backend, Stack, sdk};

/// Cases per run unless `PROPTEST_CASES` says otherwise: the CI size.
const CASES: u32 = 48;

/// The sequences' seed unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 33;

/// The jobs of one sequence: plain, with a webhook that wants its start and end, and
/// with one that wants its start and progress (no end).
const JOBS: usize = 3;

/// Where the clock starts (2027-01-15): times are epoch milliseconds.
const EPOCH_MS: u64 = 1_800_000_000_000;

/// One of the two workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Worker {
    A,
    B,
}

/// How a job in parts ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Succeeded,
    Failed,
    Cancelled,
}

/// One step of a sequence. Job and part numbers are taken modulo what exists.
#[derive(Debug, Clone)]
enum Op {
    Claim(usize, Worker, u64),
    Extend(usize, Worker, u64),
    Complete(usize, Worker),
    Fail(usize, Worker, bool),
    FinishCancelled(usize, Worker),
    Release(usize, Worker),
    Abandon(usize),
    Resend(usize),
    CancelQueued(usize),
    RequestCancel(usize),
    Withdraw(usize),
    Revive(usize, bool),
    FanOut(usize, Worker, u32),
    ClaimPart(usize, u32, Worker, u64),
    ExtendPart(usize, u32, Worker, u64),
    ReleasePart(usize, u32, Worker),
    SettleDone(usize, u32, Worker),
    SettleDead(usize, u32, Option<Worker>),
    SettleSkipped(usize, u32),
    FinishParts(usize, Ending),
    Publish(usize, bool),
    Progress(usize, u64),
    WebhookGone(usize),
    Tick(u64),
    /// The clock moves to a millisecond around the end of a job's (or a part's) lease.
    LeaseEnds(usize, Option<u32>, i64),
}

fn op() -> impl Strategy<Value = Op> {
    let job = 0..JOBS;
    let worker = prop_oneof![Just(Worker::A), Just(Worker::B)];
    let lease = prop_oneof![Just(1_000u64), Just(30_000u64)];
    let part = 0..4u32;
    let tick = prop_oneof![
        Just(0u64),
        Just(1),
        Just(500),
        Just(1_000),
        Just(30_000),
        Just(61_000),
        Just(16 * 60_000),
        Just(5 * 24 * 3_600_000)
    ];
    let ending = prop_oneof![
        Just(Ending::Succeeded),
        Just(Ending::Failed),
        Just(Ending::Cancelled)
    ];
    prop_oneof![
        6 => (job.clone(), worker.clone(), lease.clone()).prop_map(|(j, w, l)| Op::Claim(j, w, l)),
        2 => (job.clone(), worker.clone(), lease.clone()).prop_map(|(j, w, l)| Op::Extend(j, w, l)),
        3 => (job.clone(), worker.clone()).prop_map(|(j, w)| Op::Complete(j, w)),
        2 => (job.clone(), worker.clone(), any::<bool>()).prop_map(|(j, w, d)| Op::Fail(j, w, d)),
        1 => (job.clone(), worker.clone()).prop_map(|(j, w)| Op::FinishCancelled(j, w)),
        2 => (job.clone(), worker.clone()).prop_map(|(j, w)| Op::Release(j, w)),
        1 => job.clone().prop_map(Op::Abandon),
        1 => job.clone().prop_map(Op::Resend),
        1 => job.clone().prop_map(Op::CancelQueued),
        1 => job.clone().prop_map(Op::RequestCancel),
        1 => job.clone().prop_map(Op::Withdraw),
        2 => (job.clone(), any::<bool>()).prop_map(|(j, s)| Op::Revive(j, s)),
        2 => (job.clone(), worker.clone(), 1..4u32).prop_map(|(j, w, p)| Op::FanOut(j, w, p)),
        4 => (job.clone(), part.clone(), worker.clone(), lease.clone())
            .prop_map(|(j, p, w, l)| Op::ClaimPart(j, p, w, l)),
        1 => (job.clone(), part.clone(), worker.clone(), lease)
            .prop_map(|(j, p, w, l)| Op::ExtendPart(j, p, w, l)),
        1 => (job.clone(), part.clone(), worker.clone()).prop_map(|(j, p, w)| Op::ReleasePart(j, p, w)),
        3 => (job.clone(), part.clone(), worker.clone()).prop_map(|(j, p, w)| Op::SettleDone(j, p, w)),
        1 => (job.clone(), part.clone(), proptest::option::of(worker))
            .prop_map(|(j, p, w)| Op::SettleDead(j, p, w)),
        1 => (job.clone(), part).prop_map(|(j, p)| Op::SettleSkipped(j, p)),
        2 => (job.clone(), ending).prop_map(|(j, e)| Op::FinishParts(j, e)),
        3 => (job.clone(), any::<bool>()).prop_map(|(j, s)| Op::Publish(j, s)),
        1 => (job.clone(), prop_oneof![Just(0u64), Just(1_000)]).prop_map(|(j, g)| Op::Progress(j, g)),
        1 => job.clone().prop_map(Op::WebhookGone),
        5 => tick.prop_map(Op::Tick),
        3 => (job, proptest::option::of(0..4u32), -1..=1i64)
            .prop_map(|(j, p, offset)| Op::LeaseEnds(j, p, offset)),
    ]
}

/// What the specification expects of one write.
enum Expected {
    NotFound,
    Refused(Job),
    Updated(Job),
    Deleted(Job),
}

/// One sequence's world: the specification's jobs beside the store's.
struct Run<'a> {
    store: &'a dyn JobStore,
    ids: Vec<JobId>,
    /// The specification's jobs (a withdrawn job is gone).
    model: HashMap<JobId, Job>,
    /// Each job's record as read some steps ago (for stale revives and publishes).
    stale: HashMap<JobId, Job>,
    /// Each worker's latest lease token for each job, and a counter to make them.
    tokens: HashMap<(Worker, JobId), String>,
    claims: u64,
    now: u64,
}

impl Run<'_> {
    fn token(&self, worker: Worker, id: JobId) -> String {
        self.tokens
            .get(&(worker, id))
            .cloned()
            .unwrap_or_else(|| format!("{worker:?}-never-claimed"))
    }

    fn new_lease(&mut self, worker: Worker, id: JobId, ms: u64) -> Lease {
        self.claims += 1;
        let token = format!("{worker:?}-{}", self.claims);
        self.tokens.insert((worker, id), token.clone());
        Lease {
            token,
            until_epoch_ms: self.now + ms,
        }
    }

    /// The transition an op makes now, if any (ops on a withdrawn job's stale read,
    /// or a publish with nothing to send, make none).
    fn transition(&mut self, op: &Op) -> Option<(JobId, Transition)> {
        let now_epoch_ms = self.now;
        let Some(job) = op.job() else {
            self.tick(op);
            return None;
        };
        let id = self.ids[job % JOBS];
        let transition = match *op {
            Op::Tick(_) | Op::LeaseEnds(..) => unreachable!("a tick is about no job"),
            Op::Claim(_, w, ms) => Transition::Claim {
                lease: self.new_lease(w, id, ms),
                now_epoch_ms,
            },
            Op::Extend(_, w, ms) => Transition::ExtendLease {
                lease: Lease {
                    token: self.token(w, id),
                    until_epoch_ms: now_epoch_ms + ms,
                },
            },
            Op::Complete(_, w) => Transition::complete(
                self.token(w, id),
                serde_json::json!({"done": self.claims}).into(),
                now_epoch_ms,
            ),
            Op::Fail(_, w, dead) => {
                let code = if dead {
                    "dead_lettered"
                } else {
                    "inference_failed"
                };
                Transition::fail(
                    self.token(w, id),
                    ErrorInfo::new(code, "gave up"),
                    now_epoch_ms,
                )
            }
            Op::FinishCancelled(_, w) => Transition::cancelled(self.token(w, id), now_epoch_ms),
            Op::Release(_, w) => Transition::Release {
                token: self.token(w, id),
                now_epoch_ms,
            },
            Op::Abandon(_) => Transition::Abandon {
                error: ErrorInfo::new("dead_lettered", "its worker died"),
                now_epoch_ms,
            },
            Op::Resend(_) => Transition::RecordResend { now_epoch_ms },
            Op::CancelQueued(_) => Transition::CancelQueued { now_epoch_ms },
            Op::RequestCancel(_) => Transition::RequestCancel,
            Op::Withdraw(_) => Transition::Withdraw,
            Op::Revive(_, stale) => Transition::revive(self.read(id, stale)?, now_epoch_ms),
            Op::FanOut(_, w, parts) => Transition::FanOut {
                token: self.token(w, id),
                parts,
                chunks: u64::from(parts) * 10,
                now_epoch_ms,
            },
            Op::ClaimPart(_, part, w, ms) => Transition::ClaimPart {
                part,
                lease: self.new_lease(w, id, ms),
                now_epoch_ms,
            },
            Op::ExtendPart(_, part, w, ms) => Transition::ExtendPartLease {
                part,
                lease: Lease {
                    token: self.token(w, id),
                    until_epoch_ms: now_epoch_ms + ms,
                },
                now_epoch_ms,
            },
            Op::ReleasePart(_, part, w) => Transition::ReleasePart {
                part,
                token: self.token(w, id),
            },
            Op::SettleDone(_, part, w) => Transition::SettlePart {
                part,
                settle: Settle::Done {
                    token: self.token(w, id),
                    chunks: 10,
                },
                now_epoch_ms,
            },
            Op::SettleDead(_, part, w) => Transition::SettlePart {
                part,
                settle: Settle::Dead {
                    token: w.map(|w| self.token(w, id)),
                    error: format!("part {part} gave up"),
                },
                now_epoch_ms,
            },
            Op::SettleSkipped(_, part) => Transition::SettlePart {
                part,
                settle: Settle::Skipped,
                now_epoch_ms,
            },
            Op::FinishParts(_, ending) => Transition::FinishParts {
                end: match ending {
                    Ending::Succeeded => End::Succeeded(serde_json::json!({"chunks": 1}).into()),
                    Ending::Failed => End::Failed(ErrorInfo::new("dead_lettered", "a part died")),
                    Ending::Cancelled => End::Cancelled,
                },
                now_epoch_ms,
            },
            // What the publisher marks sent after handing a job's due events (as it
            // read them) to the webhooks queue.
            Op::Publish(_, stale) => {
                let job = self.read(id, stale)?;
                let kinds = job.sendable_done(&job.due_events());
                if kinds.is_empty() {
                    return None;
                }
                Transition::events_sent(job, kinds)
            }
            Op::Progress(_, min_gap_ms) => Transition::ProgressEvent {
                now_epoch_ms,
                min_gap_ms,
            },
            Op::WebhookGone(_) => Transition::WebhookGone,
        };
        Some((id, transition))
    }

    /// Moves the clock forward as a tick op says.
    fn tick(&mut self, op: &Op) {
        match *op {
            Op::Tick(ms) => self.now += ms,
            Op::LeaseEnds(j, part, offset) => {
                let job = self.model.get(&self.ids[j % JOBS]);
                let until = match part {
                    None => job.and_then(|job| job.lease_until_epoch_ms),
                    Some(part) => job
                        .and_then(|job| job.parts.as_ref())
                        .and_then(|parts| parts.leases.get(&part))
                        .map(|lease| lease.until_epoch_ms),
                };
                if let Some(until) = until {
                    self.now = self.now.max(until.saturating_add_signed(offset));
                }
            }
            _ => {}
        }
    }

    /// The job as read now, or as read some steps ago.
    fn read(&self, id: JobId, stale: bool) -> Option<&Job> {
        if stale {
            self.stale.get(&id).or_else(|| self.model.get(&id))
        } else {
            self.model.get(&id)
        }
    }

    fn expected(&self, id: JobId, transition: &Transition) -> Expected {
        let Some(job) = self.model.get(&id) else {
            return Expected::NotFound;
        };
        match transition.next(job) {
            Next::Refused => Expected::Refused(job.clone()),
            Next::Updated(after) => Expected::Updated(*after),
            Next::Deleted => Expected::Deleted(job.clone()),
        }
    }

    /// One step: the store's answer must be the specification's.
    async fn step(&mut self, step: usize, op: &Op) -> Result<(), TestCaseError> {
        let Some((id, transition)) = self.transition(op) else {
            return Ok(());
        };
        let expected = self.expected(id, &transition);
        let actual = self.store.apply(id, &transition).await;
        let context = || format!("step {step}: {op:?} as {transition:?}");
        match (expected, actual) {
            (Expected::NotFound, Err(StoreError::NotFound)) => {}
            (Expected::Refused(job), Err(StoreError::Conflict(current))) => {
                prop_assert_eq!(*current, job, "{}: refused with another job", context());
            }
            (Expected::Updated(job), Ok(written)) => {
                prop_assert_eq!(&written, &job, "{}: wrote another job", context());
                if step.is_multiple_of(3) {
                    self.stale.insert(id, job.clone());
                }
                self.model.insert(id, job);
            }
            (Expected::Deleted(job), Ok(deleted)) => {
                prop_assert_eq!(deleted, job, "{}: deleted another job", context());
                self.model.remove(&id);
            }
            (expected, actual) => {
                return Err(TestCaseError::fail(format!(
                    "{}: the specification says {expected}, the store answered {actual:?}",
                    context()
                )));
            }
        }
        Ok(())
    }
}

impl Op {
    /// The job the op is about (`None`: a tick of the clock).
    fn job(&self) -> Option<usize> {
        match *self {
            Op::Tick(_) | Op::LeaseEnds(..) => None,
            Op::Claim(j, ..)
            | Op::Extend(j, ..)
            | Op::Complete(j, ..)
            | Op::Fail(j, ..)
            | Op::FinishCancelled(j, ..)
            | Op::Release(j, ..)
            | Op::Abandon(j)
            | Op::Resend(j)
            | Op::CancelQueued(j)
            | Op::RequestCancel(j)
            | Op::Withdraw(j)
            | Op::Revive(j, ..)
            | Op::FanOut(j, ..)
            | Op::ClaimPart(j, ..)
            | Op::ExtendPart(j, ..)
            | Op::ReleasePart(j, ..)
            | Op::SettleDone(j, ..)
            | Op::SettleDead(j, ..)
            | Op::SettleSkipped(j, ..)
            | Op::FinishParts(j, ..)
            | Op::Publish(j, ..)
            | Op::Progress(j, ..)
            | Op::WebhookGone(j) => Some(j),
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::NotFound => f.write_str("not found"),
            Expected::Refused(_) => f.write_str("refused"),
            Expected::Updated(_) => f.write_str("written"),
            Expected::Deleted(_) => f.write_str("deleted"),
        }
    }
}

/// The three jobs of a sequence, created now.
fn new_jobs() -> Vec<NewJob> {
    let webhook = |events: &[EventKind]| {
        Some(Webhook::new(
            "https://hooks.example.com/property",
            events.iter().copied().collect(),
        ))
    };
    let plain = crate::new_job("embed", serde_json::json!({"texts": ["property"]}));
    let created_at_epoch_ms = EPOCH_MS;
    [
        None,
        webhook(&[EventKind::Started, EventKind::Completed]),
        webhook(&[EventKind::Started, EventKind::Progress]),
    ]
    .into_iter()
    .map(|webhook| NewJob {
        id: JobId::random(),
        created_at_epoch_ms,
        webhook,
        ..plain.clone()
    })
    .collect()
}

/// Runs one sequence on `stack`.
async fn sequence(stack: &Stack, ops: &[Op]) -> Result<(), TestCaseError> {
    let store = stack.ports.store.as_ref();
    let mut run = Run {
        store,
        ids: Vec::new(),
        model: HashMap::new(),
        stale: HashMap::new(),
        tokens: HashMap::new(),
        claims: 0,
        now: EPOCH_MS,
    };
    for new in new_jobs() {
        let job = store.create(&new).await.map_err(fail)?;
        prop_assert_eq!(&job, &Job::from_new(new), "created");
        run.ids.push(job.id);
        run.stale.insert(job.id, job.clone());
        run.model.insert(job.id, job);
    }
    for (step, op) in ops.iter().enumerate() {
        run.step(step, op).await?;
    }
    for id in &run.ids {
        let stored = store.get(*id).await.map_err(fail)?;
        prop_assert_eq!(stored.as_ref(), run.model.get(id), "read back at the end");
    }
    indexes_hold_what_the_jobs_imply(stack, &run).await
}

fn fail(err: StoreError) -> TestCaseError {
    TestCaseError::fail(format!("store error: {err}"))
}

/// The sweep finds every unfinished job and every due event, and no finished job
/// with an empty outbox; on DynamoDB each item's index keys are the job's.
async fn indexes_hold_what_the_jobs_imply(
    stack: &Stack,
    run: &Run<'_>,
) -> Result<(), TestCaseError> {
    let due: BTreeSet<JobId> = crate::conformance::due_ids(run.store, u64::MAX)
        .await
        .into_iter()
        .collect();
    for job in run.model.values() {
        let swept = due.contains(&job.id);
        if job.unfinished_due_at().is_some() || !job.due_events().is_empty() {
            prop_assert!(swept, "the sweep misses {job:?}");
        }
        if job.status.is_terminal() && !job.has_unsent_events() {
            prop_assert!(!swept, "the sweep still reads {job:?}");
        }
    }
    if stack.backend == Backend::Moto {
        let client = aws_sdk_dynamodb::Client::new(&sdk().await);
        for job in run.model.values() {
            let item = client
                .get_item()
                .table_name(&stack.resources().table)
                .key("pk", AttributeValue::S(job.id.to_string()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .item
                .unwrap_or_default();
            let implied = offpath_aws::job_item(job);
            for key in [
                "due_shard",
                "due_at_epoch_ms",
                "owner_slice",
                "outbox_shard",
            ] {
                prop_assert_eq!(item.get(key), implied.get(key), "{} of {:?}", key, job);
            }
            if !job.due_events().is_empty() {
                prop_assert!(
                    item.contains_key("outbox_at_epoch_ms"),
                    "no outbox time: {job:?}"
                );
            }
        }
    }
    Ok(())
}

/// Property: transitions on `stack`'s store agree with the specification at every
/// step. Runs on a multi-threaded runtime (it blocks one thread per case).
pub async fn transitions_agree_with_the_specification(stack: Stack) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(CASES);
    let mut config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    let stack = Arc::new(stack);
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(move || {
        let mut runner = TestRunner::new(config);
        let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
            handle.block_on(sequence(&stack, &ops))
        });
        if let Err(failure) = result {
            panic!("{}: {failure}", stack.backend.name());
        }
    });
}
