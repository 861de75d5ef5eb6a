//! Fault 1 in Kafka mode, shared by the tests that run it with different copiers (per
//! message, batch, key-concurrent) and group protocols: copier processes copy a fresh input
//! topic to a fresh output topic while they are killed at random points and at the
//! Kafka-mode failpoints, then the shared check applies and the run prints its row.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::{FaultRun, Kill, KillOutcome, check_and_report, feed_by_lives, kill_loop};
use crate::progress::CommittedOffsets;
use crate::support::spawn_logged;
use crate::{Input, Kafka, unique};

/// The Kafka-mode failpoints: after a message's records joined the transaction, after its
/// offsets did, and inside the commit.
pub const KAFKA_FAILPOINTS: [&str; 3] = ["kafka.after_produce", "kafka.after_send_offsets", "kafka.during_commit"];

/// How long the loop waits for progress at any one step.
const WAIT: Duration = Duration::from_secs(240);

/// One Kafka-mode kill loop.
#[derive(Debug)]
pub struct CopierKillLoop<'a> {
    /// The copier binary: `env!("CARGO_BIN_EXE_copier")` in a test (Cargo tells only the
    /// tests where it is).
    pub copier: &'a str,
    /// The input, on partitions `0..partitions`; each must be copied once.
    pub inputs: &'a [Input],
    /// Partitions of the input and output topics.
    pub partitions: i32,
    /// How each copier life ends.
    pub plan: Vec<Kill>,
    /// Extra environment of every copier (batch handler, key concurrency, group protocol,
    /// a delay per record).
    pub env: &'a [(&'a str, &'a str)],
    /// The static member id every copier takes, or none (dynamic members).
    pub instance: Option<&'a str>,
}

/// What a finished loop left: how its lives ended, and the copiers' output.
#[derive(Debug)]
pub struct CopierKillRun {
    /// How the lives ended.
    pub outcome: KillOutcome,
    /// The copiers' stderr, all lives.
    pub log: String,
}

impl CopierKillLoop<'_> {
    /// Runs the loop; then checks the output (each input once, in order per key, offsets
    /// at the end, no transaction left open) and prints the row of the fault `fault`, given
    /// how the lives ended. Input is fed as the lives go by, a slice at a time once the
    /// last is copied, so every planned kill finds work and every failpoint life sees several
    /// transactions, even when it waits for its killed predecessor's session to expire.
    pub async fn run(&self, fault: impl FnOnce(&KillOutcome) -> String) -> anyhow::Result<CopierKillRun> {
        let kafka = Kafka::shared().await?;
        let input = kafka.unique_topic("faults-in", self.partitions).await?;
        let output = kafka.unique_topic("faults-out", self.partitions).await?;
        let lives = Arc::new(AtomicUsize::new(0));
        let inputs = self.inputs.to_vec();
        let handled = Arc::new(AtomicU64::new(0));
        let feeder = feed_by_lives(
            kafka.client_config(),
            input.clone(),
            inputs,
            self.plan.len() + 1,
            Arc::clone(&lives),
            Some(Arc::clone(&handled)),
        );

        let group = unique("faults-kafka");
        let transactional_id = unique("faults-tx");
        let log = std::env::temp_dir().join(format!("{group}.log"));
        let brokers = kafka.bootstrap_servers();
        let mut args = vec![brokers.as_str(), &input, &output, &group, &transactional_id];
        args.extend(self.instance);
        let spawn = |kill_env: &[(&str, &str)]| {
            lives.fetch_add(1, Ordering::SeqCst);
            spawn_logged(self.copier, &args, &[kill_env, self.env].concat(), &log)
        };
        let committed = CommittedOffsets::new(kafka, &group, &input, self.partitions)?;
        let progress = || async {
            let sum = committed.sum()?;
            handled.store(sum, Ordering::SeqCst);
            Ok(sum)
        };
        let target = self.inputs.len() as u64;
        let outcome = kill_loop(&self.plan, &log, spawn, progress, target, WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}\ncopier output in {}", log.display()))?;
        feeder.await??;

        let run = FaultRun::kafka_mode(kafka.client_config(), self.inputs, &input, &output, &group);
        check_and_report(fault(&outcome), "Kafka", outcome.kills, outcome.recovery.clone(), &run).await?;
        outcome.ensure_enough_landed(&self.plan)?;
        Ok(CopierKillRun { outcome, log: std::fs::read_to_string(&log)? })
    }
}
