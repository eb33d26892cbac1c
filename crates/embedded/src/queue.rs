//! `JobQueue` in memory, with SQS's delivery semantics, fair across message groups as
//! SQS fair queues are.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use offpath_core::{
    Clock, JobMessage, JobQueue, QueueDepth, QueueError, QueueMessage, SystemClock,
};
use tokio::sync::Notify;

/// How an in-memory queue behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// Name, used in the ARN.
    pub name: String,
    /// How long a received message stays invisible.
    pub visibility_timeout: Duration,
    /// Most messages held; a full queue refuses sends as unavailable.
    pub capacity: usize,
    /// Deliver fairly across message groups (as an SQS fair queue): a due message of
    /// the group with the fewest messages in flight goes first, ties to the group
    /// served least recently, then oldest first. Off: oldest first, whatever the group.
    pub fair: bool,
}

struct Stored {
    message_id: String,
    group: Option<String>,
    body: String,
    sent_at_epoch_ms: u64,
    receive_count: u32,
    visible_at_epoch_ms: u64,
    receipt_handle: Option<String>,
}

struct Redrive {
    dlq: Arc<MemoryQueue>,
    max_receive_count: u32,
}

/// An in-memory [`JobQueue`], optionally redriving to a dead-letter queue: a message
/// received `max_receive_count` times moves there when it next becomes due, as SQS does.
pub struct MemoryQueue {
    options: QueueOptions,
    arn: String,
    messages: Mutex<VecDeque<Stored>>,
    /// When each group last had a message delivered (a counter, not a clock).
    served: Mutex<HashMap<String, u64>>,
    arrived: Notify,
    redrive: Option<Redrive>,
}

impl MemoryQueue {
    /// A queue without a dead-letter queue.
    pub fn new(options: QueueOptions) -> Self {
        MemoryQueue {
            arn: format!("arn:aws:sqs:local:000000000000:{}", options.name),
            options,
            messages: Mutex::new(VecDeque::new()),
            served: Mutex::new(HashMap::new()),
            arrived: Notify::new(),
            redrive: None,
        }
    }

    /// A queue that moves messages to `dlq` after `max_receive_count` receives.
    pub fn with_dead_letter_queue(
        options: QueueOptions,
        dlq: Arc<MemoryQueue>,
        max_receive_count: u32,
    ) -> Self {
        MemoryQueue {
            redrive: Some(Redrive {
                dlq,
                max_receive_count,
            }),
            ..Self::new(options)
        }
    }

    fn push(
        &self,
        body: String,
        group: Option<String>,
        sent_at_epoch_ms: u64,
    ) -> Result<(), QueueError> {
        let mut messages = self.messages.lock().expect("queue lock");
        if messages.len() >= self.options.capacity {
            return Err(QueueError::Unavailable(format!(
                "queue {} holds its limit of {} messages",
                self.options.name, self.options.capacity
            )));
        }
        messages.push_back(Stored {
            message_id: uuid::Uuid::new_v4().to_string(),
            group,
            body,
            sent_at_epoch_ms,
            receive_count: 0,
            visible_at_epoch_ms: 0,
            receipt_handle: None,
        });
        drop(messages);
        self.arrived.notify_waiters();
        Ok(())
    }

    /// Takes up to `max` due messages; `Err(wake_at)` when none is due yet.
    fn take(&self, max: usize, now: u64) -> Result<Vec<QueueMessage>, Option<u64>> {
        let mut messages = self.messages.lock().expect("queue lock");
        self.dead_letter_exhausted(&mut messages, now);
        let chosen = if self.options.fair {
            self.fair_order(&messages, max, now)
        } else {
            (0..messages.len())
                .filter(|&i| messages[i].visible_at_epoch_ms <= now)
                .take(max)
                .collect()
        };
        if chosen.is_empty() {
            return Err(messages.iter().map(|m| m.visible_at_epoch_ms).min());
        }
        let mut served = self.served.lock().expect("queue lock");
        let mut tick = served.values().copied().max().unwrap_or(0);
        let taken = chosen
            .into_iter()
            .map(|index| {
                let m = &mut messages[index];
                m.receive_count += 1;
                m.visible_at_epoch_ms = now + self.options.visibility_timeout.as_millis() as u64;
                let receipt = uuid::Uuid::new_v4().to_string();
                m.receipt_handle = Some(receipt.clone());
                if let Some(group) = &m.group {
                    tick += 1;
                    served.insert(group.clone(), tick);
                }
                QueueMessage {
                    message_id: m.message_id.clone(),
                    receipt_handle: receipt,
                    body: m.body.clone(),
                    receive_count: m.receive_count,
                    sent_at_epoch_ms: m.sent_at_epoch_ms,
                    group: m.group.clone(),
                }
            })
            .collect();
        Ok(taken)
    }

    /// Moves due messages that used their last receive to the dead-letter queue, as
    /// SQS does when they would next be delivered. While the dead-letter queue is full
    /// a message stays here, hidden for a visibility timeout and never delivered again,
    /// and the move is tried again then: nothing is dropped, and the error is logged.
    fn dead_letter_exhausted(&self, messages: &mut VecDeque<Stored>, now: u64) {
        let Some(redrive) = &self.redrive else {
            return;
        };
        let mut index = 0;
        while index < messages.len() {
            let m = &mut messages[index];
            if m.visible_at_epoch_ms > now || m.receive_count < redrive.max_receive_count {
                index += 1;
                continue;
            }
            let moved = redrive
                .dlq
                .push(m.body.clone(), m.group.clone(), m.sent_at_epoch_ms);
            match moved {
                Ok(()) => {
                    messages.remove(index);
                }
                Err(err) => {
                    tracing::error!(error = %err, message_id = %m.message_id,
                        "dead-letter queue full: the message stays in its queue until the DLQ has room (redrive or purge it)");
                    m.visible_at_epoch_ms =
                        now + self.options.visibility_timeout.as_millis() as u64;
                    m.receipt_handle = None;
                    index += 1;
                }
            }
        }
    }

    /// The indexes of up to `max` due messages in fair order: one at a time from the
    /// group with the fewest messages in flight (ties: served least recently), each
    /// group's messages oldest first. Messages without a group form one group.
    fn fair_order(&self, messages: &VecDeque<Stored>, max: usize, now: u64) -> Vec<usize> {
        let served = self.served.lock().expect("queue lock");
        // Per group: messages in flight, when last served, due messages oldest first.
        let mut groups: HashMap<Option<&str>, (usize, u64, VecDeque<usize>)> = HashMap::new();
        for (index, m) in messages.iter().enumerate() {
            let group = m.group.as_deref();
            let entry = groups.entry(group).or_insert_with(|| {
                let last = group.and_then(|g| served.get(g)).copied().unwrap_or(0);
                (0, last, VecDeque::new())
            });
            if m.visible_at_epoch_ms <= now {
                entry.2.push_back(index);
            } else if m.receipt_handle.is_some() {
                entry.0 += 1;
            }
        }
        let mut chosen = Vec::new();
        let mut tick = served.values().copied().max().unwrap_or(0);
        while chosen.len() < max {
            let next = groups
                .iter_mut()
                .filter(|(_, (_, _, due))| !due.is_empty())
                .min_by_key(|(_, (in_flight, last, due))| (*in_flight, *last, due[0]));
            let Some((_, (in_flight, last, due))) = next else {
                break;
            };
            chosen.push(due.pop_front().expect("a group with due messages"));
            *in_flight += 1;
            tick += 1;
            *last = tick;
        }
        chosen
    }

    fn with_receipt<T>(
        &self,
        receipt: &str,
        apply: impl FnOnce(&mut VecDeque<Stored>, usize) -> T,
    ) -> Option<T> {
        let mut messages = self.messages.lock().expect("queue lock");
        let index = messages
            .iter()
            .position(|m| m.receipt_handle.as_deref() == Some(receipt))?;
        Some(apply(&mut messages, index))
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn send(&self, message: &JobMessage, group: &str) -> Result<(), QueueError> {
        self.push(
            message.to_body(),
            Some(group.to_owned()),
            SystemClock.now_epoch_ms(),
        )
    }

    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(20));
        loop {
            let arrived = self.arrived.notified();
            let now = SystemClock.now_epoch_ms();
            let wake_at = match self.take(max.clamp(1, 10) as usize, now) {
                Ok(messages) => return Ok(messages),
                Err(wake_at) => wake_at,
            };
            let mut until = deadline;
            if let Some(at) = wake_at.filter(|&at| at > now) {
                until = until.min(tokio::time::Instant::now() + Duration::from_millis(at - now));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout_at(until, arrived).await;
        }
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        // As SQS: an outdated receipt handle "succeeds" without deleting.
        self.with_receipt(receipt_handle, |messages, index| messages.remove(index));
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let now = SystemClock.now_epoch_ms();
        let changed = self.with_receipt(receipt_handle, |messages, index| {
            let m = &mut messages[index];
            let in_flight = m.visible_at_epoch_ms > now;
            if in_flight {
                m.visible_at_epoch_ms = now + timeout.as_millis() as u64;
            }
            in_flight
        });
        if changed == Some(true) {
            if timeout.is_zero() {
                self.arrived.notify_waiters();
            }
            Ok(())
        } else {
            Err(QueueError::StaleReceipt(format!(
                "message with receipt {receipt_handle} is not in flight"
            )))
        }
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let now = SystemClock.now_epoch_ms();
        let messages = self.messages.lock().expect("queue lock");
        let visible = messages
            .iter()
            .filter(|m| m.visible_at_epoch_ms <= now)
            .count() as u64;
        Ok(QueueDepth {
            visible,
            in_flight: messages.len() as u64 - visible,
            // Nothing is sent with a delay here: retries wait in flight, as in SQS.
            delayed: 0,
        })
    }

    async fn purge(&self) -> Result<(), QueueError> {
        self.messages.lock().expect("queue lock").clear();
        Ok(())
    }

    async fn max_receive_count(&self) -> Result<Option<u32>, QueueError> {
        Ok(self.redrive.as_ref().map(|r| r.max_receive_count))
    }

    fn arn(&self) -> &str {
        &self.arn
    }
}
