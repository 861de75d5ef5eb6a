//! A runtime running in the background of a test, and what it reported.

use std::sync::{Arc, Mutex};

use exactly::{Error, RuntimeBuilder, ShutdownHandle};
use tokio::task::JoinHandle;

use crate::Kafka;

/// Errors a runtime reported through its `on_error` hook, and the messages its
/// `on_dead_letter` hook was told of (`dead-lettered ...`), as text, in order.
#[derive(Debug, Clone, Default)]
pub struct Reported(Arc<Mutex<Vec<String>>>);

impl Reported {
    /// Everything reported so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// How many reports contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|e| e.contains(needle)).count()
    }
}

/// A runtime running in a background task.
#[derive(Debug)]
pub struct Running {
    shutdown: ShutdownHandle,
    task: JoinHandle<exactly::Result<()>>,
    /// What it reported.
    pub reported: Reported,
}

impl Running {
    /// Builds `builder` (brokers of `kafka`, error hook added) and runs it in the background.
    pub async fn start(kafka: &Kafka, builder: RuntimeBuilder) -> anyhow::Result<Running> {
        Self::start_on(&kafka.bootstrap_servers(), builder).await
    }

    /// Like [`Running::start`], with the brokers given (a mock cluster, a proxy).
    pub async fn start_on(brokers: &str, builder: RuntimeBuilder) -> anyhow::Result<Running> {
        let reported = Reported::default();
        let (sink, letters) = (reported.clone(), reported.clone());
        let runtime = builder
            .brokers(brokers)
            .on_error(move |e: &Error| {
                if let Ok(mut v) = sink.0.lock() {
                    v.push(e.to_string());
                }
            })
            .on_dead_letter(move |letter| {
                if let Ok(mut v) = letters.0.lock() {
                    v.push(letter.to_string());
                }
            })
            .build()
            .await?;
        let shutdown = runtime.shutdown_handle();
        let task = tokio::spawn(runtime.run_until(std::future::pending()));
        Ok(Running { shutdown, task, reported })
    }

    /// Stops gracefully and returns what `run` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.shutdown();
        self.task.await??;
        Ok(())
    }
}
