//! What a crash test hands back: the inputs as Kafka stored them, and the checks of a
//! handler's effects against them.
//!
//! The checks count: an effect written twice is two entries, never one absorbed by a unique
//! constraint, so give them every effect row (no `DISTINCT`, no key that refuses a copy).

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::path::{Path, PathBuf};

use crate::{Error, Sent};

/// How many problems an error shows as examples.
const EXAMPLES: usize = 5;

/// The outcome of a [`CrashTest::run`](crate::CrashTest::run).
#[derive(Debug, Clone)]
pub struct CrashReport {
    sent: Vec<Sent>,
    kills: usize,
    log: PathBuf,
}

impl CrashReport {
    pub(crate) fn new(sent: Vec<Sent>, kills: usize, log: PathBuf) -> Self {
        Self { sent, kills, log }
    }

    /// Every input, where Kafka stored it, in the order they were published.
    pub fn inputs(&self) -> &[Sent] {
        &self.sent
    }

    /// How many times a worker was killed with SIGKILL while it worked.
    pub fn kills(&self) -> usize {
        self.kills
    }

    /// The log the worker processes wrote to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Checks that each input took effect exactly once: `identity` says which effect an
    /// input should leave (an order id, say), and `effects` are the identities of every
    /// effect found, one entry per effect row.
    ///
    /// # Errors
    /// [`Error::NotExactlyOnce`] when an input has no effect or more than one, or an
    /// effect matches no input, with a few examples.
    pub fn each_once<K, I>(&self, identity: impl Fn(&Sent) -> K, effects: I) -> Result<(), Error>
    where
        K: Eq + Hash + Debug,
        I: IntoIterator<Item = K>,
    {
        let mut expected: HashMap<K, usize> = HashMap::new();
        for sent in &self.sent {
            *expected.entry(identity(sent)).or_default() += 1;
        }
        let mut found: HashMap<K, usize> = HashMap::new();
        for effect in effects {
            *found.entry(effect).or_default() += 1;
        }
        let (mut missing, mut duplicated, mut unexpected, mut examples) = (0, 0, 0, Vec::new());
        for (key, want) in &expected {
            let got = found.get(key).copied().unwrap_or(0);
            if got < *want {
                missing += want - got;
                examples.push(format!("{key:?} {got} times, not {want}"));
            } else if got > *want {
                duplicated += 1;
                examples.push(format!("{key:?} {got} times, not {want}"));
            }
        }
        for (key, got) in found.iter().filter(|(key, _)| !expected.contains_key(*key)) {
            unexpected += got;
            examples.push(format!("{key:?} ({got} times) matches no input"));
        }
        if missing + duplicated + unexpected == 0 {
            return Ok(());
        }
        examples.sort();
        examples.truncate(EXAMPLES);
        Err(Error::NotExactlyOnce {
            inputs: self.sent.len(),
            missing,
            duplicated,
            unexpected,
            examples: examples.join("; "),
        })
    }

    /// Checks that the inputs of each Kafka key took effect in the order of their offsets:
    /// `applied` are the identities of the effects in the order they were written (by a
    /// sequence column, say), and `identity` says which effect an input leaves. Effects that
    /// match no input, and repeated ones, are for [`CrashReport::each_once`] to report.
    ///
    /// # Errors
    /// [`Error::OutOfKeyOrder`] naming the first key whose effects went back in offset.
    pub fn in_key_order<K, I>(&self, identity: impl Fn(&Sent) -> K, applied: I) -> Result<(), Error>
    where
        K: Eq + Hash + Debug,
        I: IntoIterator<Item = K>,
    {
        let inputs: HashMap<K, &Sent> = self.sent.iter().map(|sent| (identity(sent), sent)).collect();
        let mut last: HashMap<(i32, &[u8]), i64> = HashMap::new();
        for effect in applied {
            let Some(sent) = inputs.get(&effect) else { continue };
            let key = (sent.partition, sent.input.key.as_deref().unwrap_or_default());
            match last.get(&key) {
                Some(&before) if before > sent.offset => {
                    return Err(Error::OutOfKeyOrder {
                        key: sent.key_text(),
                        detail: format!(
                            "offset {} of partition {} took effect after offset {before}",
                            sent.offset, sent.partition
                        ),
                    });
                }
                _ => {
                    last.insert(key, sent.offset);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Input;

    fn report(keys: &[&str]) -> CrashReport {
        let sent = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Sent { partition: 0, offset: i as i64, input: Input::bytes(i.to_string()).key(*key) })
            .collect();
        CrashReport::new(sent, 0, PathBuf::new())
    }

    fn id(sent: &Sent) -> i64 {
        sent.offset
    }

    #[test]
    fn each_once_counts_missing_doubled_and_unknown_effects() {
        let report = report(&["a", "a", "b"]);
        assert!(report.each_once(id, [0, 1, 2]).is_ok());
        match report.each_once(id, [0, 0, 2, 9]) {
            Err(Error::NotExactlyOnce { missing: 1, duplicated: 1, unexpected: 1, .. }) => {}
            other => panic!("expected one missing, one doubled, one unknown: {other:?}"),
        }
    }

    #[test]
    fn key_order_is_per_key_and_by_offset() {
        let report = report(&["a", "b", "a", "b"]);
        assert!(report.in_key_order(id, [1, 0, 3, 2]).is_ok(), "keys interleave freely");
        match report.in_key_order(id, [2, 0, 1, 3]) {
            Err(Error::OutOfKeyOrder { key, .. }) => assert_eq!(key, "a"),
            other => panic!("expected key a out of order: {other:?}"),
        }
    }
}
