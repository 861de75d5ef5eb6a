//! The outbox relay: writers' transactions insert rows into `exactly.outbox`; relay
//! instances elect a leader with an advisory lock and publish the rows to Kafka, each
//! Kafka transaction carrying a batch and the relay's new position.
//!
//! As in [`crate::database`], each action is one step of the code, named in its doc
//! comment. A Kafka transaction is one action at its commit: its records are invisible
//! until then, and a producer fenced before (a successor's `init_transactions` aborted its
//! transaction) fails there. Only the commit's outcome is chosen: acknowledged, committed
//! with its reply lost, or failed.
//!
//! What the model leaves out:
//! - Each writer inserts one row; the relay's batches hold up to `batch_size` rows. A
//!   writer's effects and position are [`crate::database`]'s concern.
//! - Kafka's own protocol (the coordinator's two-phase commit, replication): a commit is
//!   atomic, and `init_transactions` completes or aborts what the previous producer of the
//!   transactional id left, as Kafka documents.
//! - PostgreSQL's snapshot machinery: a row is visible once its transaction committed,
//!   and `pg_snapshot_xmin` is the oldest running transaction's id.
//! - The relay's sleeps and timeouts, and the positions topic's compaction.

use stateright::{Model, Property};

/// The name of the property that no row reaches Kafka twice.
pub const NO_RECORD_TWICE: &str = "no record published twice";
/// The name of the property that the relay's committed position never passes a committed
/// row that was not published.
pub const NO_RECORD_SKIPPED: &str = "no record skipped";
/// The name of the property that every row can be published (the model is not vacuous).
pub const ALL_PUBLISHED: &str = "every record published";

/// The model of one relay name's outbox, with its bounds and the parts of the protocol it
/// keeps.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    /// Writer transactions, each inserting one row (at most 7).
    pub writers: u8,
    /// Relay instances (processes running a relay of this name).
    pub relays: u8,
    /// The most rows one Kafka transaction takes (`Relay::batch_size`).
    pub batch_size: u8,
    /// How many times `init_transactions` may run in one run (each raises the producer
    /// epoch): the bound on restarts.
    pub producer_epochs: u8,
    /// How many times a relay's database connection may be lost (its advisory lock with it).
    pub connection_losses: u8,
    /// How many times a relay process may crash.
    pub crashes: u8,
    /// Whether every instance uses the relay's name as `transactional.id`, so a new
    /// producer fences the previous one.
    pub shared_transactional_id: bool,
    /// Whether `fetch` reads only rows of transactions older than every running one
    /// (`txid < pg_snapshot_xmin(...)`).
    pub check_xmin: bool,
    /// Whether instances elect one publisher with the advisory lock (without it, every
    /// instance publishes at once).
    pub advisory_lock: bool,
    /// Whether `publish` runs `init_transactions` before `read_position`, as the code does
    /// (the other way round, a predecessor's commit may land after the position was read).
    pub fence_before_read: bool,
}

impl OutboxRelay {
    /// 2 writers, 2 relays, batches of up to 2 rows, 4 producer epochs, 1 connection loss,
    /// 1 crash, the protocol whole.
    pub fn new() -> Self {
        Self {
            writers: 2,
            relays: 2,
            batch_size: 2,
            producer_epochs: 4,
            connection_losses: 1,
            crashes: 1,
            shared_transactional_id: true,
            check_xmin: true,
            advisory_lock: true,
            fence_before_read: true,
        }
    }

    /// The same model with a `transactional.id` of its own for each instance: no fence.
    pub fn without_fencing(self) -> Self {
        Self { shared_transactional_id: false, ..self }
    }

    /// The same model with every instance publishing at once, as behind a pooler that
    /// loses session state such as advisory locks.
    pub fn without_advisory_lock(self) -> Self {
        Self { advisory_lock: false, ..self }
    }

    /// The same model with the position read back before `init_transactions`.
    pub fn reading_before_the_fence(self) -> Self {
        Self { fence_before_read: false, ..self }
    }

    /// The same model with `fetch` reading rows of transactions still running behind
    /// committed ones.
    pub fn without_xmin_check(self) -> Self {
        Self { check_xmin: false, ..self }
    }
}

impl Default for OutboxRelay {
    fn default() -> Self {
        Self::new()
    }
}

/// A row's place in the outbox's order: `(txid, id)`. `(0, 0)` is before every row.
pub type RowPosition = (u8, u8);

/// A writer's transaction (a Database-mode batch that emits a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Writer {
    /// Not started.
    Idle,
    /// Running: its transaction id, assigned at its first write, and its row's id once
    /// inserted.
    Running {
        /// `pg_current_xact_id()`.
        txid: u8,
        /// The row's identity, once inserted.
        id: Option<u8>,
    },
    /// Committed: its row is visible (unless it inserted none).
    Committed {
        /// The row's place, if it inserted one.
        row: Option<RowPosition>,
    },
    /// Rolled back: its row never existed.
    RolledBack,
}

/// What a relay instance knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relay {
    /// Without the lock: `lock_and_publish` tries it.
    Waiting,
    /// It took the lock, and publishes (it may have lost the lock since, and not know).
    Leading {
        /// Whether its lock connection still answers (the lock is gone with it).
        connected: bool,
        /// The producer epoch of its `init_transactions`, once run.
        producer: Option<u8>,
        /// The position read back from Kafka, or after its own commit.
        position: Option<RowPosition>,
        /// The rows fetched for the next Kafka transaction (a bit per writer) and the last
        /// one's place.
        batch: Option<(u8, RowPosition)>,
        /// Whether `delete_through` is next.
        deleting: bool,
    },
}

impl Relay {
    fn leading() -> Self {
        Relay::Leading { connected: true, producer: None, position: None, batch: None, deleting: false }
    }
}

/// The database, Kafka, the writers and relays.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// The writers' transactions.
    pub writers: Vec<Writer>,
    /// The next transaction id PostgreSQL hands out.
    pub next_txid: u8,
    /// The next row id the identity column hands out.
    pub next_id: u8,
    /// Rows deleted by the relay (a bit per writer).
    pub deleted: u8,
    /// The advisory lock's holder.
    pub lock: Option<u8>,
    /// The relay instances.
    pub relays: Vec<Relay>,
    /// The producer epoch of the shared `transactional.id`.
    pub epoch: u8,
    /// The last position committed to the positions topic.
    pub committed_position: RowPosition,
    /// How many times each writer's row was published in a committed Kafka transaction.
    pub published: Vec<u8>,
    /// Connection losses so far.
    pub losses: u8,
    /// Crashes so far.
    pub crashes: u8,
}

impl State {
    /// The committed rows, with their writer.
    fn rows(&self) -> impl Iterator<Item = (usize, RowPosition)> + '_ {
        self.writers.iter().enumerate().filter_map(|(writer, state)| match state {
            Writer::Committed { row: Some(row) } => Some((writer, *row)),
            _ => None,
        })
    }

    /// `pg_snapshot_xmin(pg_current_snapshot())`: the oldest running transaction's id.
    fn xmin(&self) -> u8 {
        self.writers
            .iter()
            .filter_map(|writer| match writer {
                Writer::Running { txid, .. } => Some(*txid),
                _ => None,
            })
            .min()
            .unwrap_or(self.next_txid)
    }
}

/// How a Kafka transaction's commit ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It committed and the relay knows.
    Acknowledged,
    /// It committed, but the relay sees an error (a timeout).
    ReplyLost,
    /// It did not commit, and the relay sees an error.
    Failed,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Acknowledged, Outcome::ReplyLost, Outcome::Failed];
}

/// One step of a writer, a relay, or a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A writer's transaction makes its first write and is given its transaction id.
    Begin {
        /// The writer.
        writer: u8,
    },
    /// `outbox::enqueue`: the row is inserted and given its id.
    Insert {
        /// The writer.
        writer: u8,
    },
    /// The writer's transaction commits.
    Commit {
        /// The writer.
        writer: u8,
    },
    /// The writer's transaction rolls back.
    Abort {
        /// The writer.
        writer: u8,
    },
    /// `lock_and_publish`: `pg_try_advisory_lock` succeeds.
    Lock {
        /// The relay.
        relay: u8,
    },
    /// `Worker::producer` (`init_transactions`): raises the producer epoch, fencing the
    /// previous producer of the transactional id and aborting its transaction.
    InitProducer {
        /// The relay.
        relay: u8,
    },
    /// `read_position`: the last committed position, read with `read_committed`.
    ReadPosition {
        /// The relay.
        relay: u8,
    },
    /// `fetch`: the next rows after the position, through the lock's connection (which
    /// fails if it was lost: the relay starts over, as `lead` does on any error).
    Fetch {
        /// The relay.
        relay: u8,
    },
    /// `send_batch`: the rows and the new position in one Kafka transaction. Fenced, it
    /// starts over; another error re-runs `init_transactions` and `read_position`.
    Publish {
        /// The relay.
        relay: u8,
        /// How the commit ends, if the producer is not fenced.
        outcome: Outcome,
    },
    /// `delete_through`: the published rows deleted (an error is only reported).
    Delete {
        /// The relay.
        relay: u8,
    },
    /// The relay's lock connection is lost; the advisory lock is released.
    LoseConnection {
        /// The relay.
        relay: u8,
    },
    /// The relay process crashes and restarts: its lock is released, its Kafka
    /// transaction is left open (to be aborted by the next `init_transactions`).
    Crash {
        /// The relay.
        relay: u8,
    },
}

/// The bit of `writer` in a set of writers.
fn bit(writer: usize) -> u8 {
    1 << writer
}

impl Model for OutboxRelay {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            writers: vec![Writer::Idle; usize::from(self.writers)],
            next_txid: 1,
            next_id: 1,
            deleted: 0,
            lock: None,
            relays: vec![Relay::Waiting; usize::from(self.relays)],
            epoch: 0,
            committed_position: (0, 0),
            published: vec![0; usize::from(self.writers)],
            losses: 0,
            crashes: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for (index, writer) in state.writers.iter().enumerate() {
            let writer_index = u8::try_from(index).unwrap_or(u8::MAX);
            match writer {
                Writer::Idle => actions.push(Action::Begin { writer: writer_index }),
                Writer::Running { id: None, .. } => actions.push(Action::Insert { writer: writer_index }),
                Writer::Running { id: Some(_), .. } => {
                    actions.push(Action::Commit { writer: writer_index });
                    actions.push(Action::Abort { writer: writer_index });
                }
                Writer::Committed { .. } | Writer::RolledBack => {}
            }
        }
        for (index, relay) in state.relays.iter().enumerate() {
            let relay_index = u8::try_from(index).unwrap_or(u8::MAX);
            match *relay {
                Relay::Waiting => {
                    if state.lock.is_none() || !self.advisory_lock {
                        actions.push(Action::Lock { relay: relay_index });
                    }
                }
                Relay::Leading { connected, producer, position, batch, deleting } => {
                    let read_first = !self.fence_before_read && position.is_none();
                    if producer.is_none() && !read_first {
                        if state.epoch < self.producer_epochs {
                            actions.push(Action::InitProducer { relay: relay_index });
                        }
                    } else if position.is_none() {
                        actions.push(Action::ReadPosition { relay: relay_index });
                    } else if deleting {
                        actions.push(Action::Delete { relay: relay_index });
                    } else if batch.is_none() {
                        actions.push(Action::Fetch { relay: relay_index });
                    } else {
                        actions.extend(Outcome::ALL.map(|outcome| Action::Publish { relay: relay_index, outcome }));
                    }
                    if connected && state.losses < self.connection_losses {
                        actions.push(Action::LoseConnection { relay: relay_index });
                    }
                }
            }
            if state.crashes < self.crashes && *relay != Relay::Waiting {
                actions.push(Action::Crash { relay: relay_index });
            }
        }
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut next = state.clone();
        match action {
            Action::Begin { writer } => {
                *next.writers.get_mut(usize::from(writer))? = Writer::Running { txid: next.next_txid, id: None };
                next.next_txid += 1;
            }
            Action::Insert { writer } => {
                let id = next.next_id;
                let Writer::Running { id: row, .. } = next.writers.get_mut(usize::from(writer))? else { return None };
                *row = Some(id);
                next.next_id += 1;
            }
            Action::Commit { writer } => {
                let slot = next.writers.get_mut(usize::from(writer))?;
                let Writer::Running { txid, id } = *slot else { return None };
                *slot = Writer::Committed { row: id.map(|id| (txid, id)) };
            }
            Action::Abort { writer } => *next.writers.get_mut(usize::from(writer))? = Writer::RolledBack,
            Action::Lock { relay } => {
                if self.advisory_lock {
                    next.lock = Some(relay);
                }
                *next.relays.get_mut(usize::from(relay))? = Relay::leading();
            }
            Action::InitProducer { relay } => {
                next.epoch += 1;
                let epoch = next.epoch;
                let Relay::Leading { producer, .. } = next.relays.get_mut(usize::from(relay))? else { return None };
                *producer = Some(epoch);
            }
            Action::ReadPosition { relay } => {
                let committed = next.committed_position;
                let Relay::Leading { position, .. } = next.relays.get_mut(usize::from(relay))? else { return None };
                *position = Some(committed);
            }
            Action::Fetch { relay } => self.fetch(&mut next, relay)?,
            Action::Publish { relay, outcome } => self.publish(&mut next, relay, outcome)?,
            Action::Delete { relay } => {
                let Relay::Leading { connected, position, deleting, .. } = next.relays.get_mut(usize::from(relay))?
                else {
                    return None;
                };
                *deleting = false;
                let (connected, through) = (*connected, (*position)?);
                if connected {
                    let passed: Vec<usize> =
                        next.rows().filter(|(_, row)| *row <= through).map(|(writer, _)| writer).collect();
                    for writer in passed {
                        next.deleted |= bit(writer);
                    }
                }
            }
            Action::LoseConnection { relay } => {
                next.losses += 1;
                if next.lock == Some(relay) {
                    next.lock = None;
                }
                let Relay::Leading { connected, .. } = next.relays.get_mut(usize::from(relay))? else { return None };
                *connected = false;
            }
            Action::Crash { relay } => {
                next.crashes += 1;
                self.start_over(&mut next, relay);
            }
        }
        (next != *state).then_some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(NO_RECORD_TWICE, |_, state: &State| state.published.iter().all(|count| *count <= 1)),
            Property::always(NO_RECORD_SKIPPED, |_, state: &State| {
                state.rows().all(|(writer, row)| row > state.committed_position || state.published[writer] == 1)
            }),
            Property::sometimes(ALL_PUBLISHED, |_, state: &State| {
                state.writers.iter().all(|writer| matches!(writer, Writer::Committed { row: Some(_) }))
                    && state.published.iter().all(|count| *count == 1)
            }),
        ]
    }
}

impl OutboxRelay {
    /// `lead` returned an error (or the process restarted): the lock connection is closed,
    /// and the relay waits for the lock again.
    fn start_over(&self, state: &mut State, relay: u8) {
        if state.lock == Some(relay) {
            state.lock = None;
        }
        if let Some(slot) = state.relays.get_mut(usize::from(relay)) {
            *slot = Relay::Waiting;
        }
    }

    /// `fetch`: `WHERE (txid, id) > position AND txid < xmin ORDER BY txid, id LIMIT
    /// batch_size`, through the lock's connection.
    fn fetch(&self, state: &mut State, relay: u8) -> Option<()> {
        let xmin = state.xmin();
        let Relay::Leading { connected, position, .. } = *state.relays.get(usize::from(relay))? else { return None };
        if !connected {
            self.start_over(state, relay);
            return Some(());
        }
        let after = position?;
        let mut rows: Vec<(RowPosition, usize)> = state
            .rows()
            .filter(|(writer, row)| {
                *row > after && state.deleted & bit(*writer) == 0 && (!self.check_xmin || row.0 < xmin)
            })
            .map(|(writer, row)| (row, writer))
            .collect();
        rows.sort_unstable();
        rows.truncate(usize::from(self.batch_size));
        let last = rows.last()?.0;
        let chosen = rows.iter().fold(0, |set, (_, writer)| set | bit(*writer));
        let Relay::Leading { batch, .. } = state.relays.get_mut(usize::from(relay))? else { return None };
        *batch = Some((chosen, last));
        Some(())
    }

    /// `send_batch` and what `publish` does with its result.
    fn publish(&self, state: &mut State, relay: u8, outcome: Outcome) -> Option<()> {
        let Relay::Leading { producer, batch, .. } = *state.relays.get(usize::from(relay))? else { return None };
        let (rows, last) = batch?;
        if self.shared_transactional_id && producer != Some(state.epoch) {
            // ProducerFenced: fatal, `lead` returns it and starts over.
            self.start_over(state, relay);
            return Some(());
        }
        if outcome != Outcome::Failed {
            for (writer, count) in state.published.iter_mut().enumerate() {
                if rows & bit(writer) != 0 {
                    *count += 1;
                }
            }
            state.committed_position = last;
        }
        let Relay::Leading { producer, position, batch, deleting, .. } = state.relays.get_mut(usize::from(relay))?
        else {
            return None;
        };
        *batch = None;
        match outcome {
            Outcome::Acknowledged => {
                *position = Some(last);
                *deleting = true;
            }
            // The outcome may be unknown: a new producer, and the position read back.
            Outcome::ReplyLost | Outcome::Failed => {
                *producer = None;
                *position = None;
            }
        }
        Some(())
    }
}
