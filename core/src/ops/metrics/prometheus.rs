//! The Prometheus exporter (`prometheus` feature): one recorder per process, installed as
//! the global `metrics` recorder by the first runtime that serves HTTP, shared by the others.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::{BATCH_SIZE, DATABASE_COMMIT_SECONDS, KAFKA_COMMIT_SECONDS, OUTBOX_COMMIT_SECONDS};
use crate::error::{Error, Result};

/// Buckets of the latency histograms, in seconds.
const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Buckets of the batch size histogram, in messages.
const MESSAGES: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

static RECORDER: OnceLock<std::result::Result<PrometheusHandle, String>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
///
/// # Errors
/// [`Error::Config`] when the application installed another global recorder first.
pub(crate) fn install() -> Result<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in [
                (BATCH_SIZE, MESSAGES),
                (DATABASE_COMMIT_SECONDS, SECONDS),
                (KAFKA_COMMIT_SECONDS, SECONDS),
                (OUTBOX_COMMIT_SECONDS, SECONDS),
            ] {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                    .map_err(|e| e.to_string())?;
            }
            builder.install_recorder().map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|reason| {
            Error::Config(format!(
                "cannot install the Prometheus recorder ({reason}): the application installed a `metrics` \
                 recorder of its own; serve its metrics yourself, or drop the `prometheus` feature"
            ))
        })
}
