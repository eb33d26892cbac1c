//! `JobQueue` on the embedded database, with SQS's delivery semantics (visibility
//! timeout, receive counts, long polling, redrive to a dead-letter queue), fair across
//! message groups as SQS fair queues are. Several processes may share the queues: a
//! receiver that finds nothing reads again every [`RECEIVE_POLL`] besides being woken
//! by sends of its own process.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use offpath_core::{
    Clock, JobMessage, JobQueue, QueueDepth, QueueError, QueueMessage, SystemClock,
};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::Notify;

use crate::database::{Database, DbError};

/// How often an idle receiver reads the queue again (messages sent by another process).
const RECEIVE_POLL: Duration = Duration::from_millis(100);

/// How a queue behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// Name: the queue's rows in the database, and its ARN.
    pub name: String,
    /// How long a received message stays invisible.
    pub visibility_timeout: Duration,
    /// Deliver fairly across message groups (as an SQS fair queue): a due message of
    /// the group with the fewest messages in flight goes first, ties to the group
    /// served least recently, then oldest first. Off: oldest first, whatever the group.
    pub fair: bool,
}

struct Redrive {
    dlq: Arc<SqliteQueue>,
    max_receive_count: u32,
}

/// A [`JobQueue`] in the embedded database, optionally redriving to a dead-letter
/// queue: a message received `max_receive_count` times moves there when it would next
/// be delivered, as SQS does, in the same transaction.
pub struct SqliteQueue {
    database: Database,
    options: QueueOptions,
    arn: String,
    /// Told of every send of this process, and of visibility set to zero.
    arrived: Notify,
    redrive: Option<Redrive>,
}

/// A message chosen for delivery.
struct Candidate {
    seq: i64,
    receive_count: u32,
}

impl SqliteQueue {
    /// A queue without a dead-letter queue.
    pub fn new(database: Database, options: QueueOptions) -> Self {
        SqliteQueue {
            arn: format!("arn:aws:sqs:local:000000000000:{}", options.name),
            database,
            options,
            arrived: Notify::new(),
            redrive: None,
        }
    }

    /// A queue that moves messages to `dlq` after `max_receive_count` receives.
    pub fn with_dead_letter_queue(
        database: Database,
        options: QueueOptions,
        dlq: Arc<SqliteQueue>,
        max_receive_count: u32,
    ) -> Self {
        SqliteQueue {
            redrive: Some(Redrive {
                dlq,
                max_receive_count,
            }),
            ..Self::new(database, options)
        }
    }

    /// Takes up to `max` due messages; `Err(wake_at)` when none is due yet.
    async fn take(
        &self,
        max: usize,
        now: u64,
    ) -> Result<Result<Vec<QueueMessage>, Option<u64>>, DbError> {
        let queue = self.options.name.clone();
        let fair = self.options.fair;
        let visible_at = now + self.options.visibility_timeout.as_millis() as u64;
        let redrive = self
            .redrive
            .as_ref()
            .map(|r| (r.dlq.options.name.clone(), r.max_receive_count));
        let (taken, dead_lettered) = self
            .database
            .run(move |connection| {
                let transaction = connection
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut taken = Vec::new();
                let mut dead_lettered = false;
                loop {
                    let candidates = if fair {
                        fair_order(&transaction, &queue, max - taken.len(), now)?
                    } else {
                        oldest(&transaction, &queue, max - taken.len(), now)?
                    };
                    if candidates.is_empty() {
                        break;
                    }
                    let mut moved = false;
                    for candidate in candidates {
                        match &redrive {
                            Some((dlq, max_receives))
                                if candidate.receive_count >= *max_receives =>
                            {
                                dead_letter(&transaction, candidate.seq, dlq)?;
                                moved = true;
                            }
                            _ => taken.push(deliver(
                                &transaction,
                                &queue,
                                candidate.seq,
                                visible_at,
                            )?),
                        }
                    }
                    dead_lettered |= moved;
                    if !moved || taken.len() >= max {
                        break;
                    }
                }
                let result = if taken.is_empty() {
                    Err(transaction
                        .query_row(
                            "SELECT min(visible_at) FROM messages WHERE queue = ?1",
                            [&queue],
                            |row| row.get::<_, Option<i64>>(0),
                        )?
                        .map(|at| at as u64))
                } else {
                    Ok(taken)
                };
                transaction.commit()?;
                Ok((result, dead_lettered))
            })
            .await?;
        if dead_lettered && let Some(redrive) = &self.redrive {
            redrive.dlq.arrived.notify_waiters();
        }
        Ok(taken)
    }
}

/// Up to `max` due messages of `queue`, oldest first.
fn oldest(
    connection: &Connection,
    queue: &str,
    max: usize,
    now: u64,
) -> Result<Vec<Candidate>, DbError> {
    let mut statement = connection.prepare_cached(
        "SELECT seq, receive_count FROM messages
         WHERE queue = ?1 AND visible_at <= ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = statement
        .query_map(params![queue, now as i64, max as i64], |row| {
            Ok(Candidate {
                seq: row.get(0)?,
                receive_count: row.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Up to `max` due messages of `queue` in fair order: one at a time from the group
/// with the fewest messages in flight (ties: served least recently), each group's
/// messages oldest first. Groups without messages are forgotten.
fn fair_order(
    connection: &Connection,
    queue: &str,
    max: usize,
    now: u64,
) -> Result<Vec<Candidate>, DbError> {
    struct Group {
        in_flight: i64,
        served: i64,
        due: std::collections::VecDeque<Candidate>,
    }
    let names: Vec<(String, i64)> = connection
        .prepare_cached("SELECT grp, served FROM message_groups WHERE queue = ?1")?
        .query_map([queue], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut count_in_flight = connection.prepare_cached(
        "SELECT count(*) FROM messages
         WHERE queue = ?1 AND grp = ?2 AND visible_at > ?3 AND receipt IS NOT NULL",
    )?;
    let mut first_due = connection.prepare_cached(
        "SELECT seq, receive_count FROM messages
         WHERE queue = ?1 AND grp = ?2 AND visible_at <= ?3 ORDER BY seq LIMIT ?4",
    )?;
    let mut groups = Vec::new();
    for (name, served) in names {
        let in_flight: i64 =
            count_in_flight.query_row(params![queue, name, now as i64], |row| row.get(0))?;
        let due = first_due
            .query_map(params![queue, name, now as i64, max as i64], |row| {
                Ok(Candidate {
                    seq: row.get(0)?,
                    receive_count: row.get(1)?,
                })
            })?
            .collect::<Result<std::collections::VecDeque<_>, _>>()?;
        if due.is_empty() && in_flight == 0 && !has_messages(connection, queue, &name)? {
            connection.execute(
                "DELETE FROM message_groups WHERE queue = ?1 AND grp = ?2",
                params![queue, name],
            )?;
            continue;
        }
        groups.push(Group {
            in_flight,
            served,
            due,
        });
    }
    let mut chosen = Vec::new();
    let mut tick = groups.iter().map(|g| g.served).max().unwrap_or(0);
    while chosen.len() < max {
        let next = groups
            .iter_mut()
            .filter(|group| !group.due.is_empty())
            .min_by_key(|group| (group.in_flight, group.served, group.due[0].seq));
        let Some(group) = next else {
            break;
        };
        chosen.push(group.due.pop_front().expect("a group with due messages"));
        group.in_flight += 1;
        tick += 1;
        group.served = tick;
    }
    Ok(chosen)
}

/// True when `queue` holds any message of group `grp`.
fn has_messages(connection: &Connection, queue: &str, grp: &str) -> Result<bool, DbError> {
    Ok(connection
        .prepare_cached("SELECT 1 FROM messages WHERE queue = ?1 AND grp = ?2 LIMIT 1")?
        .query_row(params![queue, grp], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Records a group of `queue` so that fair delivery considers it.
fn know_group(connection: &Connection, queue: &str, grp: &str) -> Result<(), DbError> {
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO message_groups (queue, grp, served) VALUES (?1, ?2, 0)",
        )?
        .execute(params![queue, grp])?;
    Ok(())
}

/// Hands out message `seq` of `queue`: one more receive, hidden until `visible_at`, a
/// new receipt handle, and its group served last.
fn deliver(
    transaction: &Transaction<'_>,
    queue: &str,
    seq: i64,
    visible_at: u64,
) -> Result<QueueMessage, DbError> {
    let receipt = uuid::Uuid::new_v4().to_string();
    let message = transaction
        .prepare_cached(
            "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?2, receipt = ?3
             WHERE seq = ?1
             RETURNING message_id, grp, body, sent_at, receive_count",
        )?
        .query_row(params![seq, visible_at as i64, receipt], |row| {
            let group: String = row.get(1)?;
            Ok(QueueMessage {
                message_id: row.get(0)?,
                receipt_handle: receipt.clone(),
                group: (!group.is_empty()).then_some(group),
                body: row.get(2)?,
                sent_at_epoch_ms: row.get::<_, i64>(3)? as u64,
                receive_count: row.get(4)?,
            })
        })?;
    if let Some(group) = &message.group {
        transaction
            .prepare_cached(
                "UPDATE message_groups
                 SET served = (SELECT max(served) + 1 FROM message_groups WHERE queue = ?1)
                 WHERE queue = ?1 AND grp = ?2",
            )?
            .execute(params![queue, group])?;
    }
    Ok(message)
}

/// Moves message `seq` to the dead-letter queue `dlq`, as newly sent there.
fn dead_letter(transaction: &Transaction<'_>, seq: i64, dlq: &str) -> Result<(), DbError> {
    let grp: String = transaction
        .prepare_cached(
            "UPDATE messages SET queue = ?2, receive_count = 0, visible_at = 0, receipt = NULL
             WHERE seq = ?1 RETURNING grp",
        )?
        .query_row(params![seq, dlq], |row| row.get(0))?;
    know_group(transaction, dlq, &grp)
}

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn send(&self, message: &JobMessage, group: &str) -> Result<(), QueueError> {
        let queue = self.options.name.clone();
        let body = message.to_body();
        let group = group.to_owned();
        let now = SystemClock.now_epoch_ms();
        self.database
            .run(move |connection| {
                let transaction = connection.transaction()?;
                transaction
                    .prepare_cached(
                        "INSERT INTO messages
                           (queue, message_id, grp, body, sent_at, receive_count, visible_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, 0, 0)",
                    )?
                    .execute(params![
                        queue,
                        uuid::Uuid::new_v4().to_string(),
                        group,
                        body,
                        now as i64
                    ])?;
                know_group(&transaction, &queue, &group)?;
                transaction.commit()?;
                Ok(())
            })
            .await?;
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(20));
        loop {
            let arrived = self.arrived.notified();
            let now = SystemClock.now_epoch_ms();
            let wake_at = match self.take(max.clamp(1, 10) as usize, now).await? {
                Ok(messages) => return Ok(messages),
                Err(wake_at) => wake_at,
            };
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline.min(tokio::time::Instant::now() + RECEIVE_POLL);
            if let Some(at) = wake_at.filter(|&at| at > now) {
                until = until.min(tokio::time::Instant::now() + Duration::from_millis(at - now));
            }
            let _ = tokio::time::timeout_at(until, arrived).await;
        }
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        // As SQS: an outdated receipt handle "succeeds" without deleting.
        let receipt = receipt_handle.to_owned();
        self.database
            .run(move |connection| {
                connection
                    .prepare_cached("DELETE FROM messages WHERE receipt = ?1")?
                    .execute([receipt])?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let now = SystemClock.now_epoch_ms();
        let receipt = receipt_handle.to_owned();
        let visible_at = now + timeout.as_millis() as u64;
        let changed = self
            .database
            .run(move |connection| {
                Ok(connection
                    .prepare_cached(
                        "UPDATE messages SET visible_at = ?2 WHERE receipt = ?1 AND visible_at > ?3",
                    )?
                    .execute(params![receipt, visible_at as i64, now as i64])?)
            })
            .await?;
        if changed == 0 {
            return Err(QueueError::StaleReceipt(format!(
                "message with receipt {receipt_handle} is not in flight"
            )));
        }
        if timeout.is_zero() {
            self.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let now = SystemClock.now_epoch_ms();
        let queue = self.options.name.clone();
        let (visible, in_flight) = self
            .database
            .run(move |connection| {
                Ok(connection.query_row(
                    "SELECT coalesce(sum(visible_at <= ?2), 0), coalesce(sum(visible_at > ?2), 0)
                     FROM messages WHERE queue = ?1",
                    params![queue, now as i64],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                )?)
            })
            .await?;
        Ok(QueueDepth {
            visible: visible as u64,
            in_flight: in_flight as u64,
            // Nothing is sent with a delay here: retries wait in flight, as in SQS.
            delayed: 0,
        })
    }

    async fn purge(&self) -> Result<(), QueueError> {
        let queue = self.options.name.clone();
        self.database
            .run(move |connection| {
                let transaction = connection.transaction()?;
                transaction.execute("DELETE FROM messages WHERE queue = ?1", [&queue])?;
                transaction.execute("DELETE FROM message_groups WHERE queue = ?1", [&queue])?;
                transaction.commit()?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn max_receive_count(&self) -> Result<Option<u32>, QueueError> {
        Ok(self.redrive.as_ref().map(|r| r.max_receive_count))
    }

    fn arn(&self) -> &str {
        &self.arn
    }
}
