//! Unique names, so tests never share a topic, group, transactional id or database.

/// `prefix` followed by a random suffix, valid as a Kafka topic, group id, transactional id
/// and (lowercase, no dashes) PostgreSQL identifier.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
