//! Database mode: one partition, claimed and worked by the instances of a group, its
//! position in `exactly.offsets` and each message's effects in one PostgreSQL database.
//!
//! Each action is one step of the code, named in its doc comment. A transaction is one
//! action: PostgreSQL's row lock serialises what matters (a claim waits for the
//! transaction that holds the position row, a second `advance` re-checks the row once the
//! first commits), and a transaction that rolls back, or a crash inside one, leaves the
//! state as it found it, which the model has already. Only the COMMIT's outcome is chosen:
//! acknowledged, committed with its reply lost, or failed, the last two unknown to the
//! worker.
//!
//! What the model leaves out, each a subset of what it explores or outside the protocol:
//! - The code stops a worker when its partition is revoked, and ends a sequential worker
//!   that is fenced. The model never stops a worker but by a crash (and ends a fenced
//!   sequential worker, as the code does): a worker that would have stopped is a zombie
//!   that does nothing more, a behaviour the model has.
//! - Failures before COMMIT (a handler's error, a lost connection, the transaction
//!   timeout) roll the transaction back: the state is unchanged, nothing to explore.
//! - Every message has a key of its own (with key-level concurrency, the most messages in
//!   flight at once), is delivered, and is handled; dead letters and parked keys are
//!   effects recorded in the same transaction, which the model does not tell apart.
//! - Kafka's copy of the position (for lag tools only) and control records.

use stateright::{Model, Property};

/// The name of the property that no message's effects commit twice.
pub const NO_EFFECT_TWICE: &str = "no effect applied twice";
/// The name of the property that the stored position never passes a message whose effects
/// did not commit.
pub const NO_OFFSET_SKIPPED: &str = "no offset skipped";
/// The name of the property that every message can be handled (the model is not vacuous).
pub const ALL_APPLIED: &str = "every message applied";

/// How the partition is worked, as its subscription's key concurrency says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Concurrency {
    /// One worker handles the messages one batch after another and moves the position by
    /// compare-and-set (`database_mode::sequential`).
    Sequential,
    /// Lanes commit messages of different keys at once, each recording its message in
    /// `exactly.completed` under the epoch; the dispatcher moves the position up to the
    /// lowest message not done (`database_mode::keyed`, `database_mode::lane`).
    Keyed,
}

/// The model of one partition in Database mode, with its bounds and the checks of the
/// protocol it keeps (removing one shows what it is for).
#[derive(Debug, Clone)]
pub struct DatabaseMode {
    /// Messages in the partition's log, offsets `0..messages` (at most 7: offsets are bits of a `u8`).
    pub messages: u8,
    /// Instances of the group, each of which Kafka may assign the partition to.
    pub instances: u8,
    /// Assignments (each one a claim) in one run: the bound on rebalances.
    pub claims: u8,
    /// Crashes of an instance in one run.
    pub crashes: u8,
    /// The most messages a sequential worker's transaction takes (`max_records`).
    pub batch_limit: u8,
    /// How the partition is worked.
    pub concurrency: Concurrency,
    /// Whether `advance` and `hold` require the worker's claim epoch (the fence).
    pub check_epoch: bool,
    /// Whether `advance` requires the expected position (the compare-and-set).
    pub check_expected: bool,
}

impl DatabaseMode {
    /// A sequential partition of 3 messages, 2 instances, 4 claims (so up to 3 zombies), 1
    /// crash, batches of up to 2, every check in place.
    pub fn sequential() -> Self {
        Self {
            messages: 3,
            instances: 2,
            claims: 4,
            crashes: 1,
            batch_limit: 2,
            concurrency: Concurrency::Sequential,
            check_epoch: true,
            check_expected: true,
        }
    }

    /// A key-concurrent partition of 3 messages, 2 instances, 2 claims, 1 crash, every
    /// check in place. (Its states grow faster than a sequential partition's: 3 claims
    /// take about a minute in a debug build.)
    pub fn keyed() -> Self {
        Self { concurrency: Concurrency::Keyed, batch_limit: 1, claims: 2, ..Self::sequential() }
    }

    /// The same model with `advance` and `hold` blind to the epoch.
    pub fn without_epoch_check(self) -> Self {
        Self { check_epoch: false, ..self }
    }

    /// The same model with `advance` blind to the expected position.
    pub fn without_expected_check(self) -> Self {
        Self { check_expected: false, ..self }
    }

    /// `advance`'s `UPDATE ... WHERE epoch = $4 AND next_offset = $5`, with the checks this
    /// model keeps: whether it moves the row.
    fn advance_matches(&self, row: Position, epoch: u8, expected: u8) -> bool {
        (!self.check_epoch || row.epoch == epoch) && (!self.check_expected || row.next_offset == expected)
    }
}

/// The row of `exactly.offsets` for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The next offset to process.
    pub next_offset: u8,
    /// Raised by every claim.
    pub epoch: u8,
}

/// What one claim started: the partition's worker on one instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Worker {
    /// The instance it runs in.
    pub instance: u8,
    /// The epoch its claim returned, which every commit presents.
    pub epoch: u8,
    /// Whether it still runs (a crash of its instance, or a fence, ends it).
    pub alive: bool,
    /// What it knows of the partition.
    pub progress: Progress,
}

/// A worker's own state, lost when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Progress {
    /// A sequential worker (`PartitionWorker` with `Progress::Position`).
    Sequential {
        /// `PartitionWorker::next`: the stored position as it believes it.
        next: u8,
        /// `PartitionWorker::commit_unknown`: its last COMMIT failed on the wire.
        commit_unknown: bool,
    },
    /// A key-concurrent partition's dispatcher and its lanes (`KeyedPartition`, `Lane`).
    Keyed {
        /// The position its claim returned: where it reads from.
        from: u8,
        /// Whether `load_state` has read the completed offsets.
        loaded: bool,
        /// `KeyedPartition::stored`: the stored position as it believes it.
        stored: u8,
        /// `KeyedPartition::stored_unknown`: its last move of the position failed.
        stored_unknown: bool,
        /// Messages done as it knows: found completed by `load_state`, or committed by its
        /// lanes (a bit per offset).
        done: u8,
        /// Messages whose lane's last COMMIT failed on the wire (a bit per offset).
        unknown: u8,
    },
}

impl Progress {
    /// `KeyedPartition::low`: the lowest message not done, with every message read.
    fn low(from: u8, done: u8, messages: u8) -> u8 {
        (from..messages).find(|offset| done & bit(*offset) == 0).unwrap_or(messages)
    }
}

/// The database, the workers, and what happened so far.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// The partition's row in `exactly.offsets`, once claimed.
    pub position: Option<Position>,
    /// The partition's rows in `exactly.completed` (a bit per offset; unique).
    pub completed: u8,
    /// How many times each message's effects committed.
    pub effects: Vec<u8>,
    /// Every worker a claim started, in claim order.
    pub workers: Vec<Worker>,
    /// Crashes so far.
    pub crashes: u8,
}

/// How a COMMIT that was sent ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It committed and the worker knows.
    Acknowledged,
    /// It committed, but the reply was lost: the worker sees an error.
    ReplyLost,
    /// It did not commit, and the worker sees an error.
    Failed,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Acknowledged, Outcome::ReplyLost, Outcome::Failed];

    fn committed(self) -> bool {
        self != Outcome::Failed
    }
}

/// One step of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Kafka assigns the partition to `instance` (a rebalance, or a restart after a crash)
    /// and its rebalance callback claims it: `GroupContext::assign` calling
    /// `offsets::claim`, which raises the epoch (or inserts the row at the log start,
    /// `StartFrom::Earliest`) and returns the position; the worker starts there.
    /// Whoever held the partition before is not told: it runs on as a zombie.
    Claim {
        /// The instance.
        instance: u8,
    },
    /// `instance` crashes: its workers end, their transactions rolled back.
    Crash {
        /// The instance.
        instance: u8,
    },
    /// A sequential worker's attempt at messages `next..end`: `PartitionWorker::attempt`,
    /// whose transaction holds the handler's effects and ends with `record_done`
    /// (`offsets::advance` from `next` to `end`) and COMMIT (`commit_batch`). A fenced or
    /// moved position ends the worker; `Advance::AlreadyCommitted` counts the messages as
    /// committed.
    Commit {
        /// The worker (its claim's index).
        worker: u8,
        /// One past the last message of the attempt.
        end: u8,
        /// How the COMMIT ends, if it is sent.
        outcome: Outcome,
    },
    /// A sequential worker after an unknown COMMIT: `resolve_unknown_commit` reads the
    /// stored position, and takes it if it is past its own.
    Resolve {
        /// The worker.
        worker: u8,
    },
    /// A key-concurrent partition's dispatcher after its claim: `load_state` reads the
    /// completed offsets at or above the claimed position (`completed::load`), which it
    /// will not hand out.
    Load {
        /// The worker.
        worker: u8,
    },
    /// A lane commits one message: its effects, then `completed::record` (`offsets::hold`
    /// checks the epoch under a share lock, the insert into `exactly.completed` fails on a
    /// row already there) and COMMIT.
    CommitLane {
        /// The worker.
        worker: u8,
        /// The message.
        offset: u8,
        /// How the COMMIT ends, if it is sent.
        outcome: Outcome,
    },
    /// A lane after an unknown COMMIT: `resolve_unknown_commit` asks `completed::recorded`
    /// whether its message is recorded; if not, the message is tried again.
    ResolveLane {
        /// The worker.
        worker: u8,
        /// The message.
        offset: u8,
    },
    /// The dispatcher moves the position: `KeyedPartition::compact`, which first reads the
    /// stored position if its last move failed, then `completed::compact` (`advance` from
    /// its stored position to the lowest message not done, and the completed rows below
    /// deleted, in one transaction).
    Compact {
        /// The worker.
        worker: u8,
        /// How the COMMIT ends, if it is sent.
        outcome: Outcome,
    },
}

/// The bit of `offset` in a set of offsets.
fn bit(offset: u8) -> u8 {
    1 << offset
}

impl Model for DatabaseMode {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            position: None,
            completed: 0,
            effects: vec![0; usize::from(self.messages)],
            workers: Vec::new(),
            crashes: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if state.workers.len() < usize::from(self.claims) {
            actions.extend((0..self.instances).map(|instance| Action::Claim { instance }));
        }
        if state.crashes < self.crashes {
            for instance in 0..self.instances {
                if state.workers.iter().any(|w| w.alive && w.instance == instance) {
                    actions.push(Action::Crash { instance });
                }
            }
        }
        for (index, worker) in state.workers.iter().enumerate() {
            if !worker.alive {
                continue;
            }
            let worker_index = u8::try_from(index).unwrap_or(u8::MAX);
            self.worker_actions(worker_index, &worker.progress, actions);
        }
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut after = state.clone();
        match action {
            Action::Claim { instance } => self.claim(&mut after, instance),
            Action::Crash { instance } => {
                after.crashes += 1;
                for worker in after.workers.iter_mut().filter(|w| w.instance == instance) {
                    worker.alive = false;
                }
            }
            Action::Commit { worker, end, outcome } => self.commit(&mut after, worker, end, outcome)?,
            Action::Resolve { worker } => {
                let stored = after.position?.next_offset;
                let w = after.workers.get_mut(usize::from(worker))?;
                if let Progress::Sequential { next, commit_unknown } = &mut w.progress {
                    *next = (*next).max(stored);
                    *commit_unknown = false;
                }
            }
            Action::Load { worker } => {
                let completed = after.completed;
                let w = after.workers.get_mut(usize::from(worker))?;
                if let Progress::Keyed { from, loaded, done, .. } = &mut w.progress {
                    *done = completed & !(bit(*from) - 1);
                    *loaded = true;
                }
            }
            Action::CommitLane { worker, offset, outcome } => self.commit_lane(&mut after, worker, offset, outcome)?,
            Action::ResolveLane { worker, offset } => {
                let recorded = after.completed & bit(offset) != 0;
                let w = after.workers.get_mut(usize::from(worker))?;
                if let Progress::Keyed { done, unknown, .. } = &mut w.progress {
                    *unknown &= !bit(offset);
                    if recorded {
                        *done |= bit(offset);
                    }
                }
            }
            Action::Compact { worker, outcome } => self.compact(&mut after, worker, outcome)?,
        }
        (after != *state).then_some(after)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(NO_EFFECT_TWICE, |_, state: &State| state.effects.iter().all(|count| *count <= 1)),
            Property::always(NO_OFFSET_SKIPPED, |_, state: &State| {
                let stored = state.position.map_or(0, |row| usize::from(row.next_offset));
                state.effects.iter().take(stored).all(|count| *count == 1)
            }),
            Property::sometimes(ALL_APPLIED, |model: &DatabaseMode, state: &State| {
                state.position.is_some_and(|row| row.next_offset == model.messages)
                    && state.effects.iter().all(|count| *count == 1)
            }),
        ]
    }
}

impl DatabaseMode {
    /// What a live worker may do next.
    fn worker_actions(&self, worker: u8, progress: &Progress, actions: &mut Vec<Action>) {
        match *progress {
            Progress::Sequential { commit_unknown: true, .. } => actions.push(Action::Resolve { worker }),
            Progress::Sequential { next, commit_unknown: false } => {
                let last = next.saturating_add(self.batch_limit).min(self.messages);
                for end in next + 1..=last {
                    actions.extend(Outcome::ALL.map(|outcome| Action::Commit { worker, end, outcome }));
                }
            }
            Progress::Keyed { loaded: false, .. } => actions.push(Action::Load { worker }),
            Progress::Keyed { from, loaded: true, stored, stored_unknown, done, unknown } => {
                for offset in from..self.messages {
                    if unknown & bit(offset) != 0 {
                        actions.push(Action::ResolveLane { worker, offset });
                    } else if done & bit(offset) == 0 {
                        actions.extend(Outcome::ALL.map(|outcome| Action::CommitLane { worker, offset, outcome }));
                    }
                }
                if stored_unknown || Progress::low(from, done, self.messages) > stored {
                    actions.extend(Outcome::ALL.map(|outcome| Action::Compact { worker, outcome }));
                }
            }
        }
    }

    /// `offsets::claim`, and the worker it starts.
    fn claim(&self, state: &mut State, instance: u8) {
        let row = match state.position {
            Some(row) => Position { epoch: row.epoch + 1, ..row },
            None => Position { next_offset: 0, epoch: 1 },
        };
        state.position = Some(row);
        let progress = match self.concurrency {
            Concurrency::Sequential => Progress::Sequential { next: row.next_offset, commit_unknown: false },
            Concurrency::Keyed => Progress::Keyed {
                from: row.next_offset,
                loaded: false,
                stored: row.next_offset,
                stored_unknown: false,
                done: 0,
                unknown: 0,
            },
        };
        state.workers.push(Worker { instance, epoch: row.epoch, alive: true, progress });
    }

    /// A sequential worker's transaction for `next..end`; `None` when it is not one.
    fn commit(&self, state: &mut State, worker: u8, end: u8, outcome: Outcome) -> Option<()> {
        let row = state.position?;
        let w = state.workers.get_mut(usize::from(worker))?;
        let epoch = w.epoch;
        let Progress::Sequential { next, commit_unknown } = &mut w.progress else { return None };
        let start = *next;
        if self.advance_matches(row, epoch, start) {
            // Advance::Advanced: COMMIT is sent.
            if outcome.committed() {
                for offset in start..end {
                    state.effects[usize::from(offset)] += 1;
                }
                state.position = Some(Position { next_offset: end, ..row });
            }
            match outcome {
                Outcome::Acknowledged => *next = (*next).max(end),
                Outcome::ReplyLost | Outcome::Failed => *commit_unknown = true,
            }
        } else if row.epoch == epoch && row.next_offset == end {
            // Advance::AlreadyCommitted: rolled back, counted as committed.
            *next = (*next).max(end);
        } else {
            // Error::Fenced or Error::PositionMoved: rolled back, fatal to the worker.
            w.alive = false;
        }
        Some(())
    }

    /// A lane's transaction for `offset`; `None` when it is not one.
    fn commit_lane(&self, state: &mut State, worker: u8, offset: u8, outcome: Outcome) -> Option<()> {
        let row = state.position?;
        let w = state.workers.get_mut(usize::from(worker))?;
        if self.check_epoch && row.epoch != w.epoch {
            // offsets::hold: Error::Fenced, rolled back.
            return Some(());
        }
        if state.completed & bit(offset) != 0 {
            // The completed row's primary key: a unique violation, rolled back.
            return Some(());
        }
        let Progress::Keyed { done, unknown, .. } = &mut w.progress else { return None };
        if outcome.committed() {
            state.effects[usize::from(offset)] += 1;
            state.completed |= bit(offset);
        }
        match outcome {
            Outcome::Acknowledged => *done |= bit(offset),
            Outcome::ReplyLost | Outcome::Failed => *unknown |= bit(offset),
        }
        Some(())
    }

    /// The dispatcher's `compact`; `None` when it is not one.
    fn compact(&self, state: &mut State, worker: u8, outcome: Outcome) -> Option<()> {
        let row = state.position?;
        let w = state.workers.get_mut(usize::from(worker))?;
        let epoch = w.epoch;
        let Progress::Keyed { from, stored, stored_unknown, done, .. } = &mut w.progress else { return None };
        let low = Progress::low(*from, *done, self.messages);
        if *stored_unknown {
            *stored = row.next_offset;
            *stored_unknown = false;
        }
        if low <= *stored {
            return Some(());
        }
        if self.advance_matches(row, epoch, *stored) {
            // Advance::Advanced: the completed rows below `low` deleted, COMMIT sent.
            if outcome.committed() {
                state.position = Some(Position { next_offset: low, ..row });
                state.completed &= !(bit(low) - 1);
            }
            match outcome {
                Outcome::Acknowledged => *stored = low,
                Outcome::ReplyLost | Outcome::Failed => *stored_unknown = true,
            }
        } else if row.epoch == epoch && row.next_offset == low {
            // Advance::AlreadyCommitted: rolled back, the move counted as done.
            *stored = low;
        } else {
            // Fenced or PositionMoved: reported, the position read again before the next
            // move. The code then stops the partition; the model lets it go on, which
            // only adds behaviours.
            *stored_unknown = true;
        }
        Some(())
    }
}
