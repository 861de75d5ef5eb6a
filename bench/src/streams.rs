//! The Kafka Streams baseline: a small Java program (`bench/streams/`) resolved from Maven
//! Central, built here on first use and run with `processing.guarantee=exactly_once_v2`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::process::Measured;

/// The JVM's heap ceiling: modest and fixed, so its peak RSS is comparable between runs.
const MAX_HEAP: &str = "-Xmx1g";

/// The embedded producer's `batch.size`, in bytes: what a Kafka Streams user raises for
/// throughput. The Java producer's default (16 KB) holds 16 records of 1 KB per partition
/// batch, so a copy at 100 000 msg/s sends thousands of small produce requests a second;
/// Kafka's and Confluent's throughput advice is 64 to 256 KB. (librdkafka, under the
/// other systems, batches up to 1 MB by default.)
pub(crate) const BATCH_SIZE: usize = 128 * 1024;

/// The embedded producer's `linger.ms`: how long a batch waits to fill. Kafka 4's default
/// is 5 ms (librdkafka's too); 10 ms lets 128 KB batches fill at the rates measured here,
/// and under exactly-once the records wait for the commit (every 100 ms) anyway.
pub(crate) const LINGER_MS: u64 = 10;

/// The Java program's directory.
fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("streams")
}

fn jar() -> PathBuf {
    project().join("target").join("streams-copy.jar")
}

/// The newest modification time of `path` or anything under it.
fn newest(path: &Path) -> SystemTime {
    let own = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| newest(&entry.path()))
        .fold(own, SystemTime::max)
}

/// Builds the program with Maven unless its jar is newer than its sources.
pub(crate) async fn build() -> anyhow::Result<()> {
    let project = project();
    let built = std::fs::metadata(jar()).and_then(|m| m.modified()).ok();
    let sources = newest(&project.join("src")).max(newest(&project.join("pom.xml")));
    if built.is_some_and(|built| built >= sources) {
        return Ok(());
    }
    eprintln!("exactly-bench: building the Kafka Streams baseline with Maven ({})", project.display());
    let output = Command::new("mvn")
        .args(["-B", "-q", "-f"])
        .arg(project.join("pom.xml"))
        .args(["package", "dependency:copy-dependencies", "-DincludeScope=runtime"])
        .output()
        .await
        .context(
            "cannot run `mvn`: the Kafka Streams baseline is built with Maven and Java 17 \
             (on Debian: apt-get install maven openjdk-17-jdk-headless)",
        )?;
    if !output.status.success() {
        bail!(
            "Maven could not build the Kafka Streams baseline:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// What one Kafka Streams run copies.
#[derive(Debug, Clone)]
pub(crate) struct StreamsCopy {
    pub(crate) brokers: String,
    pub(crate) input: String,
    pub(crate) output: String,
    pub(crate) application_id: String,
    pub(crate) commit_interval_ms: u64,
    /// Stream threads (`num.stream.threads`).
    pub(crate) threads: usize,
}

impl StreamsCopy {
    /// Starts the program (built beforehand by [`build`]) and waits until it is running.
    pub(crate) async fn start(&self, name: &str, logs: &Path) -> anyhow::Result<Measured> {
        let target = project().join("target");
        let classpath = format!("{}:{}/dependency/*", jar().display(), target.display());
        let state = std::env::temp_dir().join(format!("exactly-bench-streams-{}", self.application_id));
        let mut command = Command::new("java");
        command
            .arg(MAX_HEAP)
            .arg("-cp")
            .arg(classpath)
            .arg("exactly.bench.StreamsCopy")
            .args(["--bootstrap", &self.brokers, "--input", &self.input, "--output", &self.output])
            .args(["--application-id", &self.application_id])
            .args(["--commit-interval-ms", &self.commit_interval_ms.to_string()])
            .args(["--threads", &self.threads.to_string()])
            .args(["--batch-size", &BATCH_SIZE.to_string(), "--linger-ms", &LINGER_MS.to_string()])
            .arg("--state-dir")
            .arg(&state);
        let mut process = Measured::start(command, name, logs)?;
        tokio::time::timeout(Duration::from_secs(120), process.line_starting("READY"))
            .await
            .context("Kafka Streams did not reach RUNNING within two minutes")??;
        Ok(process)
    }
}

/// The Java runtime's version line, for the report.
pub(crate) async fn java_version() -> String {
    match Command::new("java").arg("-version").output().await {
        Ok(output) => String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or_default().to_owned(),
        Err(_) => "java not found".to_owned(),
    }
}
