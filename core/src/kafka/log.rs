//! librdkafka's log lines, through `tracing` (target `librdkafka`).

use rdkafka::config::RDKafkaLogLevel;

/// Logs one line of librdkafka's at the matching `tracing` level (below warnings: debug).
pub(crate) fn forward(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", "{fac}: {log_message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {log_message}"),
        _ => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
    }
}
