//! A Kafka-mode group's thread: poll, handle, commit when due; at shutdown, commit and
//! leave.
//!
//! One thread per group polls the consumer and runs the handler message by message (a
//! batch handler: on what was fetched, see [`super::batched`]), on tokio's blocking pool. The handler's future is polled once in place and only driven by
//! the runtime if it waits (see [`complete`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::KafkaModeSettings;
use super::batched::gather;
use super::rebalance::KafkaModeContext;
use super::state::{GroupState, Handling};
use crate::api::mode::Kafka;
use crate::api::subscription::Subscription;
use crate::engine::group::{Group, start_polling};
use crate::engine::shared::Shared;
use crate::error::{Error, Result};
use crate::pipeline::work::Work;

/// Starts a Kafka-mode group: its consumer and the thread that runs it.
pub(super) fn start<H: Work<Mode = Kafka> + 'static>(
    handler: Arc<H>,
    shared: &Arc<Shared>,
    consumer_config: ClientConfig,
    subscription: &Subscription,
    settings: KafkaModeSettings,
) -> Result<Group> {
    let group = subscription.group().to_owned();
    let handling = Handling {
        group: group.clone(),
        outputs: subscription.outputs().to_vec(),
        retry: subscription.retry().unwrap_or(shared.retry),
        dead_letter_topic: subscription.dead_letter_topic().map(str::to_owned),
        reads_headers: subscription.reads_headers(),
        key_concurrency: subscription.key_concurrency(),
        deadline: settings.handler_deadline(),
    };
    let state = Mutex::new(GroupState::new(handling, settings));
    let context = KafkaModeContext { shared: Arc::clone(shared), state };
    let consumer: BaseConsumer<KafkaModeContext> = consumer_config.create_with_context(context)?;
    // Initialise the producers now, so a wrong setting fails at start, not at the first
    // message, and each fences what an earlier incarnation left open.
    {
        let mut state = consumer.context().lock();
        state.producers.get(0)?;
        state.producers.get(1)?;
    }
    let topics: Vec<&str> = subscription.topics().iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(start_polling(shared, subscription, move |shared, topics| run(&consumer, &*handler, shared, topics)))
}

/// The group's loop: poll, handle, commit when due; at shutdown commit and leave. A
/// refused authorization (a missing ACL on the group or one of `topics`) stops the runtime.
pub(super) fn run<H: Work<Mode = Kafka>>(
    consumer: &BaseConsumer<KafkaModeContext>,
    handler: &H,
    shared: &Shared,
    topics: &[String],
) -> Result<()> {
    let mut outputs = Vec::new();
    // Read once per message, after it is handled (the clock is a fair share of the loop's
    // CPU): for when the transaction is due, and for how long the next poll may wait.
    let mut now = Instant::now();
    while !shared.shutting_down() {
        // The rebalance callback runs inside poll and takes the lock itself. A message
        // already fetched is taken without a timeout first: librdkafka then reads no clock
        // and arms no wait, which under a steady stream is most of what a poll costs; how
        // long to wait is worked out only when there is none.
        let polled = match consumer.poll(Duration::ZERO) {
            None => {
                let wait = {
                    let state = consumer.context().lock();
                    // While a commit runs, look for its end often.
                    let most =
                        if state.committing.is_some() { Duration::from_millis(5) } else { Duration::from_millis(100) };
                    match state.txn.opened {
                        Some(opened) => state
                            .producers
                            .settings
                            .commit_interval
                            .saturating_sub(now.saturating_duration_since(opened))
                            .min(most),
                        None => most,
                    }
                };
                consumer.poll(wait)
            }
            ready => ready,
        };
        let mut state = consumer.context().lock();
        match polled {
            Some(Ok(message)) if H::BATCHES || state.handling.key_concurrency > 1 => {
                drop(state);
                let gathered = gather(consumer, message, shared.batch.max_records);
                state = consumer.context().lock();
                if H::BATCHES {
                    state.handle_gathered(consumer, handler, &gathered.held, shared, &mut outputs);
                } else {
                    state.handle_keyed(consumer, handler, &gathered.held, shared);
                }
                if let Some(e) = gathered.error {
                    poll_failed(consumer, &state.handling.group, shared, topics, e);
                }
            }
            Some(Ok(message)) => state.handle(consumer, handler, &message, shared, &mut outputs),
            Some(Err(e)) => poll_failed(consumer, &state.handling.group, shared, topics, e),
            None => state.skip_control_records(consumer, shared),
        }
        state.settle_committing(consumer, shared, false);
        now = Instant::now();
        if state.due_at(now) {
            state.start_commit(consumer, shared);
        }
        state.retry_due(consumer, shared);
    }
    consumer.context().lock().commit(consumer, shared);
    consumer.unsubscribe();
    Ok(())
}

/// A poll returned `error`: reported; a refused authorization (a missing ACL on `group`
/// or one of `topics`) stops the runtime.
fn poll_failed(
    consumer: &BaseConsumer<KafkaModeContext>,
    group: &str,
    shared: &Shared,
    topics: &[String],
    error: KafkaError,
) {
    if let KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange) = error {
        shared.report(&Error::from(error));
        return;
    }
    match crate::kafka::refusal::consumer_refusal(consumer, &error, group, topics) {
        Some(refusal) => shared.fail(refusal),
        None => tracing::warn!(group = %group, "consumer: {error}"),
    }
}

/// [`complete`], with `future` abandoned (dropped) if it waits past `limit`: `None` then.
/// The clock is armed only once the future waits, so a handler that does not wait costs no
/// timer.
pub(super) fn complete_within<F: std::future::Future>(
    handle: &tokio::runtime::Handle,
    limit: Duration,
    future: F,
) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match poll_in_place(future.as_mut()) {
        Some(output) => Some(output),
        None => handle.block_on(tokio::time::timeout(limit, future)).ok(),
    }
}

/// Runs `future` to its end on this (blocking) thread: polled once in place, which is all a
/// handler that does not wait needs; only one that waits is driven on by `block_on`.
/// Entering the runtime with `block_on` for every message cost more CPU than copying the
/// message. The loop runs on tokio's blocking pool, whose threads are inside the runtime's
/// context already, so a handler can use tokio (timers, spawning) in place.
pub(super) fn complete<F: std::future::Future>(handle: &tokio::runtime::Handle, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match poll_in_place(future.as_mut()) {
        Some(output) => output,
        None => handle.block_on(future),
    }
}

/// Polls `future` once, with a waker that does nothing: its output if it is ready.
fn poll_in_place<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}
