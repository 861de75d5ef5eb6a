//! Which input offsets an at-least-once copy may commit: per input partition, those whose
//! records, and the records of every offset before them, were delivered.
//!
//! The copy's loop notes each record as it sends it; the producer's delivery reports,
//! which come back on librdkafka's thread and in any order across output partitions, mark
//! them delivered. The loop then commits what is safe without waiting for anything.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Sent and delivered input offsets, per input partition.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    partitions: Mutex<HashMap<i32, Pending>>,
}

/// One input partition's records in flight.
#[derive(Debug, Default)]
struct Pending {
    /// Offsets sent and not yet committable, in send (so offset) order, each with whether
    /// its record was delivered.
    in_flight: VecDeque<(i64, bool)>,
    /// The next offset to commit, when it moved since the last commit.
    committable: Option<i64>,
}

impl Deliveries {
    /// Notes that the record copied from `offset` of input `partition` was handed to the
    /// producer. Called before the send, so that its report cannot come first.
    pub(super) fn sent(&self, partition: i32, offset: i64) {
        let mut partitions = self.partitions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        partitions.entry(partition).or_default().in_flight.push_back((offset, false));
    }

    /// Notes that the record copied from `offset` of input `partition` was delivered.
    pub(super) fn delivered(&self, partition: i32, offset: i64) {
        let mut partitions = self.partitions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(pending) = partitions.get_mut(&partition) else { return };
        if let Ok(index) = pending.in_flight.binary_search_by_key(&offset, |&(offset, _)| offset) {
            pending.in_flight[index].1 = true;
        }
        while let Some(&(offset, true)) = pending.in_flight.front() {
            pending.in_flight.pop_front();
            pending.committable = Some(offset + 1);
        }
    }

    /// The next offset of each partition that moved since the last call: every record
    /// before it was delivered.
    pub(super) fn take_committable(&self) -> Vec<(i32, i64)> {
        let mut partitions = self.partitions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        partitions
            .iter_mut()
            .filter_map(|(&partition, pending)| Some((partition, pending.committable.take()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Deliveries;

    #[test]
    fn only_offsets_with_everything_before_them_delivered_become_committable() {
        let deliveries = Deliveries::default();
        for offset in 0..4 {
            deliveries.sent(0, offset);
        }
        deliveries.sent(1, 10);
        deliveries.delivered(0, 1);
        deliveries.delivered(0, 2);
        assert_eq!(deliveries.take_committable(), vec![], "offset 0 is still in flight");
        deliveries.delivered(0, 0);
        assert_eq!(deliveries.take_committable(), vec![(0, 3)]);
        assert_eq!(deliveries.take_committable(), vec![], "nothing moved since");
        deliveries.delivered(1, 10);
        deliveries.delivered(0, 3);
        let mut committable = deliveries.take_committable();
        committable.sort_unstable();
        assert_eq!(committable, vec![(0, 4), (1, 11)]);
    }
}
