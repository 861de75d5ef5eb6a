//! Checking a copy: the output, read with `read_committed`, holds each input exactly once,
//! in order per key.

use std::collections::HashMap;
use std::time::Duration;

use crate::{Input, Isolation, Kafka, read_to_end};

/// `count` records over `keys` keys: key `k{i % keys}`, payload `k{i % keys}:{seq}` where
/// `seq` counts up per key.
pub fn keyed_inputs(count: usize, keys: usize) -> Vec<Input> {
    (0..count)
        .map(|i| {
            let key = format!("k{}", i % keys);
            let payload = format!("{key}:{}", i / keys);
            Input::bytes(payload).key(key)
        })
        .collect()
}

/// Like [`keyed_inputs`], with key `k{j}` on partition `j % partitions`: every partition
/// gets input (hashing 40 keys over 6 partitions could leave one empty).
pub fn keyed_inputs_on(count: usize, keys: usize, partitions: i32) -> Vec<Input> {
    let mut inputs = keyed_inputs(count, keys);
    for (i, input) in inputs.iter_mut().enumerate() {
        input.partition = Some((i % keys) as i32 % partitions);
    }
    inputs
}

/// What the output holds against `expected` inputs made by [`keyed_inputs`].
#[derive(Debug, PartialEq, Eq)]
pub struct CopyVerdict {
    /// Records in the output.
    pub records: usize,
    /// Inputs seen more than once.
    pub duplicates: usize,
    /// Inputs never seen.
    pub missing: usize,
    /// Records that came after a later one of the same key.
    pub out_of_order: usize,
}

impl CopyVerdict {
    /// Asserts that the output holds `records` records: every input once, none missing, each
    /// key in order.
    #[track_caller]
    pub fn assert_exactly_once(&self, records: usize) {
        assert_eq!((self.records, self.duplicates, self.missing, self.out_of_order), (records, 0, 0, 0), "{self:?}");
    }
}

/// Reads `topic` (read_committed) and checks it against `expected` keyed inputs.
pub async fn verify_copy(kafka: &Kafka, topic: &str, expected: &[Input]) -> anyhow::Result<CopyVerdict> {
    let records = read_to_end(kafka.client_config(), topic, Isolation::ReadCommitted, Duration::from_secs(120)).await?;
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut out_of_order = 0;
    for record in &records {
        let payload = record.payload.clone().unwrap_or_default();
        *seen.entry(payload.clone()).or_default() += 1;
        let text = String::from_utf8_lossy(&payload).into_owned();
        if let Some((key, seq)) = text.split_once(':')
            && let Ok(seq) = seq.parse::<u64>()
        {
            if last_seq.get(key).is_some_and(|last| *last >= seq) {
                out_of_order += 1;
            }
            last_seq.insert(key.to_owned(), seq);
        }
    }
    let duplicates = seen.values().filter(|n| **n > 1).count();
    let missing = expected.iter().filter(|input| !seen.contains_key(&input.payload)).count();
    Ok(CopyVerdict { records: records.len(), duplicates, missing, out_of_order })
}
