//! The keys of S8's inputs: uniform over 10 000 keys, Zipf-distributed (s = 1) over
//! 10 000, or one hot key; and the partition each key goes to.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng as _};

/// How many distinct keys the uniform and Zipf inputs draw from.
pub(crate) const KEYS: u32 = 10_000;

/// Zipf's exponent: s = 1, the classic skew (the most frequent key about a tenth of all).
const ZIPF_EXPONENT: f64 = 1.0;

/// The inputs are drawn with a fixed seed, so that every run of the bench measures the
/// same keys in the same order.
const SEED: u64 = 0x5eed_0008;

/// How an input's keys are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyDistribution {
    /// Each message's key drawn uniformly from [`KEYS`] keys.
    Uniform,
    /// Drawn from [`KEYS`] keys with Zipf's law, s = 1: the key of rank k with weight 1 / k.
    Zipf,
    /// Every message has the same key.
    HotKey,
}

impl KeyDistribution {
    /// Every distribution, in the report's order.
    pub(crate) const ALL: [Self; 3] = [Self::Uniform, Self::Zipf, Self::HotKey];

    /// How the report names it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Uniform => "uniform over 10 000 keys",
            Self::Zipf => "Zipf (s = 1) over 10 000 keys",
            Self::HotKey => "one hot key",
        }
    }

    /// Its name in file names.
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Zipf => "zipf",
            Self::HotKey => "hot-key",
        }
    }

    /// The keys of `n` messages, in order.
    pub(crate) fn sample(self, n: u64) -> Vec<u32> {
        let mut rng = StdRng::seed_from_u64(SEED);
        match self {
            Self::Uniform => (0..n).map(|_| rng.random_range(0..KEYS)).collect(),
            Self::Zipf => {
                let zipf = Zipf::new(KEYS, ZIPF_EXPONENT);
                (0..n).map(|_| zipf.sample(&mut rng)).collect()
            }
            Self::HotKey => (0..n).map(|_| 0).collect(),
        }
    }
}

/// Zipf's law over `keys` ranks: the key of rank k (key k − 1) drawn with probability
/// proportional to 1 / k^s. Sampled by inverse CDF: the cumulative probabilities once,
/// then a binary search per draw. Written here because `rand_distr`, whose `Zipf` does
/// the same, is not in the workspace's lock file, and 10 000 ranks take 80 KB of table.
#[derive(Debug, Clone)]
pub(crate) struct Zipf {
    /// The probability that a draw is at most each rank, ascending; the last is 1.
    cumulative: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(keys: u32, exponent: f64) -> Self {
        let weights: Vec<f64> = (1..=keys.max(1)).map(|rank| f64::from(rank).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        let cumulative = weights
            .iter()
            .map(|weight| {
                sum += weight / total;
                sum
            })
            .collect();
        Self { cumulative }
    }

    /// A key: 0 for the most frequent, up to `keys − 1`.
    pub(crate) fn sample(&self, rng: &mut impl Rng) -> u32 {
        let draw: f64 = rng.random();
        let rank = self.cumulative.partition_point(|&below| below <= draw);
        // A draw above the last sum, short of 1 by rounding, is the last key's.
        let rank = rank.min(self.cumulative.len().saturating_sub(1));
        u32::try_from(rank).unwrap_or(u32::MAX)
    }
}

/// The name `key` has on the wire.
pub(crate) fn name(key: u32) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}

/// The partition `key` goes to, of `partitions`: a hash of it, as a producer's partitioner
/// places a key. A key is always in one partition, so its order is that partition's.
pub(crate) fn partition_of(key: u32, partitions: i32) -> i32 {
    // SplitMix64's finaliser: every bit of the key stirs every bit of the hash, so that
    // neighbouring keys (the Zipf input's most frequent) land in unrelated partitions.
    let mut hash = u64::from(key).wrapping_add(0x9e37_79b9_7f4a_7c15);
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    let partitions = u64::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(hash % partitions).unwrap_or(0)
}

/// How many messages the most frequent of `keys` has: its messages are handled one at a
/// time, whatever the in-flight bound, so they alone set a floor under a run's duration.
pub(crate) fn most_frequent(keys: &[u32]) -> u64 {
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for &key in keys {
        *counts.entry(key).or_default() += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{KEYS, KeyDistribution, most_frequent, partition_of};

    #[test]
    fn zipf_gives_the_first_key_a_tenth_and_stays_within_the_keys() {
        let keys = KeyDistribution::Zipf.sample(100_000);
        assert!(keys.iter().all(|&key| key < KEYS));
        // 1 / H(10 000) = 0.1021.
        let first = keys.iter().filter(|&&key| key == 0).count();
        assert!((9_500..=10_900).contains(&first), "key 0 drawn {first} times in 100 000");
        let second = keys.iter().filter(|&&key| key == 1).count();
        assert!((4_600..=5_600).contains(&second), "key 1 drawn {second} times in 100 000");
        assert_eq!(most_frequent(&keys), u64::try_from(first).unwrap_or_default());
    }

    #[test]
    fn uniform_keys_fill_every_partition_about_evenly_and_the_same_each_time() {
        let keys = KeyDistribution::Uniform.sample(80_000);
        assert_eq!(keys, KeyDistribution::Uniform.sample(80_000), "seeded");
        let mut per_partition = [0_u32; 8];
        for &key in &keys {
            per_partition[usize::try_from(partition_of(key, 8)).unwrap_or_default()] += 1;
        }
        for count in per_partition {
            assert!((9_000..=11_000).contains(&count), "{per_partition:?}");
        }
    }

    #[test]
    fn one_hot_key_is_every_message() {
        assert_eq!(most_frequent(&KeyDistribution::HotKey.sample(500)), 500);
    }
}
