//! Core's transitions in DynamoDB's words: a [`Condition`] becomes a condition
//! expression, [`Change`]s and the [`Reindex`] they imply become one update
//! expression. A translation, one arm per fact or change; the rules are in
//! `offpath_core::transition`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use offpath_core::JobId;
use offpath_core::index::{DUE_SHARDS, DueMove, OWNER_SLICES, OutboxMove, Reindex};
use offpath_core::transition::{Change, Condition, Fact};

use crate::item::{attr, error_value, kinds, n, owner_slice, part_lease, s};

/// The placeholders of one request: every attribute name is sent as `#name` (a part
/// number as `#pN`), every value as `:vN`.
#[derive(Debug, Default)]
pub(crate) struct Expression {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expression {
    /// The placeholders, for the request.
    pub(crate) fn into_parts(
        self,
    ) -> (
        HashMap<String, String>,
        Option<HashMap<String, AttributeValue>>,
    ) {
        let values = (!self.values.is_empty()).then_some(self.values);
        (self.names, values)
    }

    /// The placeholder of an attribute name.
    fn name(&mut self, name: &str) -> String {
        let placeholder = format!("#{name}");
        self.names.insert(placeholder.clone(), name.to_owned());
        placeholder
    }

    /// The placeholder of a part's key in the part maps.
    fn part(&mut self, part: u32) -> String {
        let placeholder = format!("#p{part}");
        self.names.insert(placeholder.clone(), part.to_string());
        placeholder
    }

    /// `#map.#pN`: a part's entry in one of the part maps.
    fn part_entry(&mut self, map: &str, part: u32) -> String {
        format!("{}.{}", self.name(map), self.part(part))
    }

    /// The placeholder of a value.
    fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    /// `#name = :value`.
    pub(crate) fn equals(&mut self, name: &str, value: AttributeValue) -> String {
        format!("{} = {}", self.name(name), self.value(value))
    }

    /// `#name :value`: a clause of `ADD`.
    pub(crate) fn plus(&mut self, name: &str, value: AttributeValue) -> String {
        format!("{} {}", self.name(name), self.value(value))
    }

    /// No item has this key yet (a create).
    pub(crate) fn absent(&mut self) -> String {
        format!("attribute_not_exists({})", self.name(attr::PK))
    }

    /// An index query's key condition: partition `hash = key`, sort key `range` before
    /// `before`.
    pub(crate) fn before(
        &mut self,
        hash: &str,
        key: AttributeValue,
        range: &str,
        before: AttributeValue,
    ) -> String {
        let partition = self.equals(hash, key);
        format!(
            "{partition} AND {} < {}",
            self.name(range),
            self.value(before)
        )
    }

    /// The condition expression of `condition`, on an item that exists.
    pub(crate) fn condition(&mut self, condition: &Condition) -> String {
        let exists = format!("attribute_exists({})", self.name(attr::PK));
        format!("{exists} AND {}", self.clause(condition))
    }

    fn clause(&mut self, condition: &Condition) -> String {
        let mut join = |conditions: &[Condition], with: &str| {
            let clauses: Vec<String> = conditions.iter().map(|c| self.clause(c)).collect();
            format!("({})", clauses.join(with))
        };
        match condition {
            Condition::Is(fact) => self.fact(fact),
            Condition::Not(condition) => format!("NOT ({})", self.clause(condition)),
            Condition::All(conditions) => join(conditions, " AND "),
            Condition::Any(conditions) => join(conditions, " OR "),
        }
    }

    fn fact(&mut self, fact: &Fact) -> String {
        match fact {
            Fact::Status(status) => self.equals(attr::STATUS, s(status.as_str())),
            Fact::LeaseHolder(token) => self.equals(attr::LEASE_OWNER, s(token)),
            Fact::LeaseEnded(at) => {
                format!("{} <= {}", self.name(attr::LEASE_UNTIL), self.value(n(*at)))
            }
            Fact::CancelRequested => {
                self.equals(attr::CANCEL_REQUESTED, AttributeValue::Bool(true))
            }
            Fact::ErrorCode(code) => {
                let path = format!("{}.{}", self.name(attr::ERROR), self.name("code"));
                format!("{path} = {}", self.value(s(code)))
            }
            Fact::FinishedAt(Some(at)) => self.equals(attr::FINISHED_AT, n(*at)),
            Fact::FinishedAt(None) => {
                format!("attribute_not_exists({})", self.name(attr::FINISHED_AT))
            }
            Fact::Attempts(attempts) => self.equals(attr::ATTEMPTS, n((*attempts).into())),
            Fact::Version(version) => self.equals(attr::VERSION, n(*version)),
            Fact::HasWebhook => format!("attribute_exists({})", self.name(attr::WEBHOOK_URL)),
            Fact::WebhookGone => self.equals(attr::WEBHOOK_GONE, AttributeValue::Bool(true)),
            Fact::Subscribed(kind) => {
                let events = self.name(attr::WEBHOOK_EVENTS);
                format!("contains({events}, {})", self.value(s(kind.as_str())))
            }
            Fact::ProgressSentAfter(at) => format!(
                "{} > {}",
                self.name(attr::WEBHOOK_PROGRESS_AT),
                self.value(n(*at))
            ),
            Fact::PartExists(part) => format!(
                "{} > {}",
                self.name(attr::PARTS_TOTAL),
                self.value(n((*part).into()))
            ),
            Fact::PartSettled(part) => {
                let settled = self.name(attr::PARTS_SETTLED);
                format!("contains({settled}, {})", self.value(n((*part).into())))
            }
            Fact::PartLeaseLive(part, at) => {
                let until = format!(
                    "{}.{}",
                    self.part_entry(attr::PART_LEASES, *part),
                    self.name(attr::UNTIL)
                );
                format!("{until} > {}", self.value(n(*at)))
            }
            Fact::PartLeaseHolder(part, token) => {
                let holder = format!(
                    "{}.{}",
                    self.part_entry(attr::PART_LEASES, *part),
                    self.name(attr::TOKEN)
                );
                format!("{holder} = {}", self.value(s(token)))
            }
            // A set cannot be empty: no set is no part settled.
            Fact::AllPartsSettled => {
                let (settled, total) =
                    (self.name(attr::PARTS_SETTLED), self.name(attr::PARTS_TOTAL));
                let zero = self.value(n(0));
                format!(
                    "((attribute_exists({settled}) AND size({settled}) = {total}) \
                     OR (attribute_not_exists({settled}) AND {total} = {zero}))"
                )
            }
        }
    }
}

/// The clauses of one update expression.
#[derive(Debug, Default)]
pub(crate) struct Update {
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    delete: Vec<String>,
}

impl Update {
    /// The update making `changes` to job `id`, with the index keys they move
    /// (`moves`; `owner`, the job's owner, for a job that joins the admission index
    /// again) and the version counted up.
    pub(crate) fn of(
        expression: &mut Expression,
        id: JobId,
        changes: &[Change],
        moves: Reindex,
        owner: Option<&str>,
    ) -> Self {
        let mut update = Update::default();
        for change in changes {
            update.change(expression, change);
        }
        update.reindex(expression, id, moves, owner);
        let version = expression.name(attr::VERSION);
        let one = expression.value(n(1));
        update.set.push(format!("{version} = {version} + {one}"));
        update
    }

    /// The update expression.
    pub(crate) fn text(&self) -> String {
        [
            ("SET", &self.set),
            ("REMOVE", &self.remove),
            ("ADD", &self.add),
            ("DELETE", &self.delete),
        ]
        .iter()
        .filter(|(_, clauses)| !clauses.is_empty())
        .map(|(keyword, clauses)| format!("{keyword} {}", clauses.join(", ")))
        .collect::<Vec<_>>()
        .join(" ")
    }

    fn set(&mut self, expression: &mut Expression, name: &str, value: AttributeValue) {
        let clause = expression.equals(name, value);
        self.set.push(clause);
    }

    fn remove(&mut self, expression: &mut Expression, names: &[&str]) {
        self.remove
            .extend(names.iter().map(|name| expression.name(name)));
    }

    fn change(&mut self, expression: &mut Expression, change: &Change) {
        let e = expression;
        match change {
            Change::Status(status) => self.set(e, attr::STATUS, s(status.as_str())),
            Change::Lease(lease) => {
                self.set(e, attr::LEASE_OWNER, s(&lease.token));
                self.set(e, attr::LEASE_UNTIL, n(lease.until_epoch_ms));
            }
            Change::LeaseUntil(until) => self.set(e, attr::LEASE_UNTIL, n(*until)),
            Change::DropLease => self.remove(e, &[attr::LEASE_OWNER, attr::LEASE_UNTIL]),
            Change::CountAttempt => {
                let (attempts, one) = (e.name(attr::ATTEMPTS), e.value(n(1)));
                self.set.push(format!("{attempts} = {attempts} + {one}"));
            }
            Change::FirstStart(at) => {
                let (started, at) = (e.name(attr::STARTED_AT), e.value(n(*at)));
                self.set
                    .push(format!("{started} = if_not_exists({started}, {at})"));
            }
            Change::Output(output) => self.set(e, attr::OUTPUT, s(output.get())),
            Change::Error(error) => self.set(e, attr::ERROR, error_value(error)),
            Change::ClearError => self.remove(e, &[attr::ERROR]),
            Change::FinishedAt(at) => self.set(e, attr::FINISHED_AT, n(*at)),
            Change::ClearFinishedAt => self.remove(e, &[attr::FINISHED_AT]),
            Change::RequeuedAt(at) => {
                self.set(e, attr::REQUEUED_AT, n(*at));
                self.remove(e, &[attr::RESENT_AT]);
            }
            Change::ResentAt(at) => self.set(e, attr::RESENT_AT, n(*at)),
            Change::RequestCancel => {
                self.set(e, attr::CANCEL_REQUESTED, AttributeValue::Bool(true))
            }
            Change::Split { parts, chunks, at } => {
                let empty = || AttributeValue::M(HashMap::new());
                self.set(e, attr::PARTS_TOTAL, n((*parts).into()));
                self.set(e, attr::CHUNKS_TOTAL, n(*chunks));
                self.set(e, attr::CHUNKS_DONE, n(0));
                self.set(e, attr::PARTS_DEAD, empty());
                self.set(e, attr::PART_LEASES, empty());
                self.set(e, attr::PART_ATTEMPTS, empty());
                self.set(e, attr::PARTS_TOUCHED_AT, n(*at));
                self.remove(e, &[attr::PARTS_SETTLED]);
            }
            Change::PartLease(part, lease) => {
                let entry = e.part_entry(attr::PART_LEASES, *part);
                self.set
                    .push(format!("{entry} = {}", e.value(part_lease(lease))));
            }
            Change::DropPartLease(part) => {
                self.remove.push(e.part_entry(attr::PART_LEASES, *part));
            }
            Change::CountPartAttempt(part) => {
                let entry = e.part_entry(attr::PART_ATTEMPTS, *part);
                let (zero, one) = (e.value(n(0)), e.value(n(1)));
                self.set
                    .push(format!("{entry} = if_not_exists({entry}, {zero}) + {one}"));
            }
            Change::PartsTouched(at) => self.set(e, attr::PARTS_TOUCHED_AT, n(*at)),
            Change::SettlePart(part) => {
                let set = AttributeValue::Ns(vec![part.to_string()]);
                self.add.push(e.plus(attr::PARTS_SETTLED, set));
            }
            Change::ChunksDone(chunks) => self.add.push(e.plus(attr::CHUNKS_DONE, n(*chunks))),
            Change::PartDead(part, error) => {
                let entry = e.part_entry(attr::PARTS_DEAD, *part);
                self.set.push(format!("{entry} = {}", e.value(s(error))));
            }
            Change::Unsettle(parts) if parts.is_empty() => {}
            Change::Unsettle(parts) => {
                let set = AttributeValue::Ns(parts.iter().map(u32::to_string).collect());
                self.delete.push(e.plus(attr::PARTS_SETTLED, set));
                for part in parts {
                    self.remove.push(e.part_entry(attr::PART_ATTEMPTS, *part));
                }
            }
            Change::ClearDeadParts => {
                self.set(e, attr::PARTS_DEAD, AttributeValue::M(HashMap::new()))
            }
            // DynamoDB sets cannot be empty: no kinds is no change.
            Change::Unsend(unsent) if !unsent.is_empty() => {
                self.add.push(e.plus(attr::WEBHOOK_UNSENT, kinds(unsent)));
            }
            Change::Sent(sent) if !sent.is_empty() => {
                self.delete.push(e.plus(attr::WEBHOOK_UNSENT, kinds(sent)));
            }
            Change::Unsend(_) | Change::Sent(_) => {}
            Change::ClearOutbox => self.remove(e, &[attr::WEBHOOK_UNSENT]),
            Change::WebhookGone => self.set(e, attr::WEBHOOK_GONE, AttributeValue::Bool(true)),
            Change::ProgressAt(at) => self.set(e, attr::WEBHOOK_PROGRESS_AT, n(*at)),
        }
    }

    /// The index keys a write moves (see `item::attr` for the indexes).
    fn reindex(&mut self, e: &mut Expression, id: JobId, moves: Reindex, owner: Option<&str>) {
        // The outbox index shares the sweep index's shards.
        let shard = || n(id.shard(DUE_SHARDS).into());
        match moves.due {
            DueMove::Stay => {}
            DueMove::To(at) => self.set(e, attr::DUE_AT, n(at)),
            DueMove::Leave => self.remove(e, &[attr::DUE_SHARD, attr::DUE_AT, attr::OWNER_SLICE]),
            DueMove::Rejoin(at) => {
                self.set(e, attr::DUE_SHARD, shard());
                self.set(e, attr::DUE_AT, n(at));
                if let Some(owner) = owner {
                    let slice = owner_slice(owner, id.shard(OWNER_SLICES));
                    self.set(e, attr::OWNER_SLICE, s(slice));
                }
            }
        }
        match moves.outbox {
            OutboxMove::Stay => {}
            OutboxMove::Due(at) => self.set(e, attr::OUTBOX_AT, n(at)),
            OutboxMove::Sent => self.remove(e, &[attr::OUTBOX_AT]),
            OutboxMove::Emptied => self.remove(e, &[attr::OUTBOX_SHARD, attr::OUTBOX_AT]),
            OutboxMove::Refilled => self.set(e, attr::OUTBOX_SHARD, shard()),
        }
    }
}
