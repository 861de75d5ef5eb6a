//! What a handler consumes: topics, consumer group and delivery mode, and what happens to
//! a message it fails on.

use super::settings::RetryPolicy;
use crate::error::{Error, Result};

/// How the messages of a topic are shared among handler instances.
///
/// Both modes rest on Kafka consumer groups; the mode states the intent, and the docs and
/// checks follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Every instance of the handler joins the same group: each message is handled by one
    /// of them (work is shared, partition by partition).
    #[default]
    PointToPoint,
    /// The group names one subscriber: every subscriber (every group) handles every message,
    /// and within a subscriber the group's instances share the work as in point-to-point.
    PublishSubscribe,
}

/// Topics, group and delivery mode of a handler, and its failure policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    topics: Vec<String>,
    group: String,
    delivery: Delivery,
    outputs: Vec<String>,
    retry: Option<RetryPolicy>,
    key_parking: bool,
    key_concurrency: usize,
    dead_letter_topic: Option<String>,
    headers: bool,
}

impl Subscription {
    /// A subscription to `topics` as consumer group `group`.
    pub fn new<T: Into<String>>(
        topics: impl IntoIterator<Item = T>,
        group: impl Into<String>,
        delivery: Delivery,
    ) -> Self {
        Self {
            topics: topics.into_iter().map(Into::into).collect(),
            group: group.into(),
            delivery,
            outputs: Vec::new(),
            retry: None,
            key_parking: false,
            key_concurrency: 1,
            dead_letter_topic: None,
            headers: true,
        }
    }

    /// This handler's retry policy, in place of the runtime's
    /// ([`RuntimeBuilder::retry`](crate::RuntimeBuilder::retry)).
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Key-level parking (Database mode): a message that fails is parked in PostgreSQL with
    /// every later message of its key, and the partition's other keys go on. Parked
    /// messages are retried in offset order, per key, as the retry policy says, and
    /// dead-lettered when it gives up. Order is kept per key, not across keys.
    #[must_use]
    pub fn with_key_parking(mut self) -> Self {
        self.key_parking = true;
        self
    }

    /// Key-level concurrency: up to `lanes` messages of one partition are handled at once,
    /// never two of the same key. A key's messages are handled, and commit, in offset
    /// order; messages of different keys finish in any order; a message without a key has
    /// no order to keep. 1, the default, handles a partition one message after another.
    ///
    /// In Database mode each message's effects commit with the record that it is done, so a
    /// crash or a rebalance redoes nothing that committed and skips nothing that did not.
    /// In Kafka mode the fetched messages run in windows, and each partition's records and
    /// offset join the transaction once its window has run, up to its first failure; a
    /// Kafka-mode batch handler refuses it.
    ///
    /// In Database mode each lane holds a transaction (a connection) while it handles its
    /// messages, and all lanes of all partitions share the runtime's
    /// [`max_concurrent_batches`](crate::RuntimeBuilder::max_concurrent_batches). See the
    /// book's chapter on key-level concurrency for the bound on what a partition reads
    /// ahead, and when not to use it.
    #[must_use]
    pub fn with_key_concurrency(mut self, lanes: usize) -> Self {
        self.key_concurrency = lanes;
        self
    }

    /// How many messages of one partition may be handled at once (see
    /// [`Subscription::with_key_concurrency`]); 1 is one after another.
    pub fn key_concurrency(&self) -> usize {
        self.key_concurrency
    }

    /// Dead letters go to this Kafka topic instead of the `exactly.dead_letters` table: in
    /// Kafka mode in the transaction that commits the offset past them, in Database mode
    /// through the outbox (so an outbox relay must run). Each carries the original key,
    /// payload and headers, plus `exactly.error`, `exactly.attempts`, `exactly.group`,
    /// `exactly.topic`, `exactly.partition` and `exactly.offset` headers.
    #[must_use]
    pub fn with_dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Declares that the handler does not read headers: every [`Message::headers`] it is
    /// given is empty, and the runtime saves parsing them. librdkafka parses a record's
    /// headers when asked for them, with an allocation even for a record that has none; in
    /// Kafka mode, where a copy costs its loop a few microseconds per message, that parse
    /// was a tenth of the loop's CPU (docs/src/performance.md).
    ///
    /// The runtime still reads them where it needs them: for the trace context (with
    /// [`RuntimeBuilder::trace_context`](crate::RuntimeBuilder::trace_context)), and for a
    /// dead letter, which carries the original headers.
    ///
    /// [`Message::headers`]: crate::Message::headers
    #[must_use]
    pub fn without_headers(mut self) -> Self {
        self.headers = false;
        self
    }

    /// Whether the handler is given the records' headers (see
    /// [`Subscription::without_headers`]).
    pub fn reads_headers(&self) -> bool {
        self.headers
    }

    /// The handler's own retry policy, if it has one.
    pub fn retry(&self) -> Option<RetryPolicy> {
        self.retry
    }

    /// Whether failing keys are parked (see [`Subscription::with_key_parking`]).
    pub fn key_parking(&self) -> bool {
        self.key_parking
    }

    /// The dead-letter topic, if dead letters go to Kafka.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    /// Declares the topics the handler emits to; emitting elsewhere is then an error.
    #[must_use]
    pub fn with_outputs<T: Into<String>>(mut self, outputs: impl IntoIterator<Item = T>) -> Self {
        self.outputs = outputs.into_iter().map(Into::into).collect();
        self
    }

    /// The declared output topics (empty: not declared).
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// The topics.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The consumer group id (also the key of the stored positions).
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The delivery mode.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// Checks topic and group names as Kafka does.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad topic or group.
    pub fn validate(&self) -> Result<()> {
        if self.topics.is_empty() {
            return Err(Error::Config(format!("group {}: a handler must consume at least one topic", self.group)));
        }
        for topic in self.topics.iter().chain(&self.outputs).chain(&self.dead_letter_topic) {
            check_name("topic", topic).map_err(Error::Config)?;
        }
        if let Some(topic) = &self.dead_letter_topic
            && self.topics.contains(topic)
        {
            return Err(Error::Config(format!(
                "group {}: the dead-letter topic `{topic}` is also an input topic, so a dead letter would be \
                 consumed again",
                self.group
            )));
        }
        if !(1..=MAX_KEY_CONCURRENCY).contains(&self.key_concurrency) {
            return Err(Error::Config(format!(
                "group {}: key concurrency must be 1 to {MAX_KEY_CONCURRENCY} (messages of a partition handled at \
                 once, each lane holding a database connection), not {}",
                self.group, self.key_concurrency
            )));
        }
        if self.group.is_empty() || self.group.len() > 255 {
            return Err(Error::Config(format!("group id `{}` must have 1 to 255 characters", self.group)));
        }
        Ok(())
    }
}

/// The most lanes a partition may have: each holds a database connection while it works,
/// so more than this would need more connections than a PostgreSQL server usually allows.
pub(crate) const MAX_KEY_CONCURRENCY: usize = 1024;

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_name(what: &str, name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!("{what} `{name}` must have 1 to 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("{what} `{name}` is not allowed by Kafka"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!(
            "{what} `{name}` contains `{bad}`: Kafka allows only ASCII letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names() {
        assert!(Subscription::new(["orders"], "g", Delivery::PointToPoint).validate().is_ok());
        assert!(Subscription::new(["or ders"], "g", Delivery::PointToPoint).validate().is_err());
        assert!(Subscription::new(Vec::<String>::new(), "g", Delivery::PointToPoint).validate().is_err());
        assert!(Subscription::new([".."], "g", Delivery::PointToPoint).validate().is_err());
        assert!(Subscription::new(["a"], "", Delivery::PointToPoint).validate().is_err());
        let looping = Subscription::new(["a"], "g", Delivery::PointToPoint).with_dead_letter_topic("a");
        assert!(looping.validate().is_err_and(|e| e.to_string().contains("consumed again")));
        let bad = Subscription::new(["a"], "g", Delivery::PointToPoint).with_dead_letter_topic("a b");
        assert!(bad.validate().is_err());
        let none = Subscription::new(["a"], "g", Delivery::PointToPoint).with_key_concurrency(0);
        assert!(none.validate().is_err_and(|e| e.to_string().contains("key concurrency must be 1 to 1024")));
        let lanes = Subscription::new(["a"], "g", Delivery::PointToPoint).with_key_concurrency(64);
        assert!(lanes.validate().is_ok());
    }
}
