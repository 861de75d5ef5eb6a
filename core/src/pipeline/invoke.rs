//! Calling a handler: the one place that does it, for one message or for a batch.
//!
//! [`invoke`] opens the message's span (group, topic, partition, offset, which try), gives
//! it and the handler's [`Context`] the message's trace context, runs the handler with its
//! panics caught, and says how it ended as an [`Outcome`]. [`invoke_batch`] does the same
//! for a batch handler, in one span for the batch. What the outcome means for the caller's
//! transaction (roll back, retry, dead-letter) is the caller's to decide.

use std::error::Error as StdError;

use tracing::Instrument;

use super::panics;
use crate::api::batch::BatchHandler;
use crate::api::context::Context;
use crate::api::handler::{Handler, HandlerError};
use crate::api::message::Message;
use crate::error::{Error, Location};
use crate::kafka::trace_context::TraceContext;

/// An error a handler gave, or its panic as a sentence.
pub(crate) type Cause = Box<dyn StdError + Send + Sync>;

/// Which message a call is for, and which try at it: what its span records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) group: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Which try at this message this is, from 1 (see [`super::attempts`]).
    pub(crate) attempt: u32,
    /// The span the message's span goes under, when not the current one (Kafka mode's
    /// transaction).
    pub(crate) parent: Option<&'a tracing::Span>,
}

impl Call<'_> {
    /// Where the message is, for an error about it.
    pub(crate) fn location(&self) -> Location {
        Location {
            group: self.group.to_owned(),
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// The span of a batch handler's call on `records` messages from this one.
    fn batch_span(&self, records: usize) -> tracing::Span {
        let (group, topic, partition, offset, attempt) =
            (self.group, self.topic, self.partition, self.offset, self.attempt);
        match self.parent {
            Some(parent) => {
                tracing::debug_span!(parent: parent, "messages", group = %group, topic = %topic, partition, offset, records, attempt)
            }
            None => {
                tracing::debug_span!("messages", group = %group, topic = %topic, partition, offset, records, attempt)
            }
        }
    }

    /// The span of the message's handling; the trace context's fields are filled in later.
    fn span(&self) -> tracing::Span {
        let (group, topic, partition, offset, attempt) =
            (self.group, self.topic, self.partition, self.offset, self.attempt);
        match self.parent {
            Some(parent) => {
                tracing::debug_span!(parent: parent, "message", group = %group, topic = %topic, partition, offset, attempt,
                trace_id = tracing::field::Empty, parent_span_id = tracing::field::Empty,
                span_id = tracing::field::Empty)
            }
            None => tracing::debug_span!("message", group = %group, topic = %topic, partition, offset, attempt,
                trace_id = tracing::field::Empty, parent_span_id = tracing::field::Empty,
                span_id = tracing::field::Empty),
        }
    }
}

/// How one call of a handler on one message ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It returned `Ok`: its effects stand, if its transaction commits.
    Handled,
    /// The database failed under it (a serialization failure, a deadlock, a lost
    /// connection): the same call may pass if made again, and it is not the message's
    /// fault, so it does not count as a try.
    Transient(Cause),
    /// It returned an error or panicked: a try that failed. `permanent` when the handler
    /// said that trying again cannot help ([`HandlerError::permanent`]).
    Failed { cause: Cause, permanent: bool },
}

impl Outcome {
    /// The error to report for a failed call at `location`; `None` when it was handled.
    pub(crate) fn into_error(self, location: impl FnOnce() -> Location) -> Option<(Error, FailureKind)> {
        let (source, kind) = self.into_failure()?;
        Some((Error::Handler { location: location(), source }, kind))
    }

    /// Why a failed call failed and how it counts; `None` when it was handled.
    pub(crate) fn into_failure(self) -> Option<(Cause, FailureKind)> {
        match self {
            Outcome::Handled => None,
            Outcome::Transient(source) => Some((source, FailureKind::Transient)),
            Outcome::Failed { cause, permanent } => {
                let kind = if permanent { FailureKind::Permanent } else { FailureKind::Counted };
                Some((cause, kind))
            }
        }
    }
}

/// How a failed call counts against its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Not the message's fault: tried again without counting.
    Transient,
    /// A try that failed; tried again while the retry policy allows.
    Counted,
    /// Trying again cannot help: to the dead letters at once.
    Permanent,
}

/// Calls `handler` on `message` with `cx`, in the message's span, with its trace context
/// (`trace`, when trace context is on and the message carries one), its panics caught.
pub(crate) async fn invoke<H: Handler>(
    handler: &H,
    message: &Message<H::Key, H::Payload>,
    cx: &mut Context<'_, H::Mode>,
    call: Call<'_>,
    trace: Option<TraceContext>,
) -> Outcome {
    let span = call.span();
    if let Some(trace) = &trace {
        trace.record(&span);
    }
    cx.set_trace(trace);
    let returned = panics::catch(handler.handle(message, cx).instrument(span)).await;
    classify(returned)
}

/// Calls the batch handler `handler` on `messages` (at least one) with `cx`, in one span
/// for the batch (`call` is its first message's), its panics caught. Returns how it ended,
/// and which message it named as the cause ([`BatchError::at`](crate::api::batch::BatchError::at)) when it failed: the
/// message itself when there is one; `None` when it named none, or one past the batch.
pub(crate) async fn invoke_batch<B: BatchHandler>(
    handler: &B,
    messages: &[&Message<B::Key, B::Payload>],
    cx: &mut Context<'_, B::Mode>,
    call: Call<'_>,
) -> (Outcome, Option<usize>) {
    let span = call.batch_span(messages.len());
    // Records it emits carry no message's trace: a batch has many.
    cx.set_trace(None);
    match panics::catch(handler.handle_batch(messages, cx).instrument(span)).await {
        Ok(Ok(())) => (Outcome::Handled, None),
        Ok(Err(error)) => {
            let named = error.index().filter(|index| *index < messages.len());
            let index = if messages.len() == 1 { Some(0) } else { named };
            (classify(Ok(Err(error.into_inner()))), index)
        }
        Err(panic) => (classify(Err(panic)), (messages.len() == 1).then_some(0)),
    }
}

/// Sorts what a call returned (or the panic it was caught in) into an [`Outcome`].
fn classify(returned: Result<Result<(), HandlerError>, String>) -> Outcome {
    match returned {
        Ok(Ok(())) => Outcome::Handled,
        Ok(Err(error)) if error.is_transient() => Outcome::Transient(error.into_inner()),
        Ok(Err(error)) => {
            let permanent = error.is_permanent();
            Outcome::Failed { cause: error.into_inner(), permanent }
        }
        Err(panic) => Outcome::Failed { cause: panic.into(), permanent: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_classified_by_what_the_handler_returned() {
        assert!(matches!(classify(Ok(Ok(()))), Outcome::Handled));
        let transient = HandlerError::new(sqlx::Error::PoolTimedOut);
        assert!(matches!(classify(Ok(Err(transient))), Outcome::Transient(_)));
        let counted = classify(Ok(Err(HandlerError::new("no such customer"))));
        assert!(matches!(counted, Outcome::Failed { permanent: false, .. }), "{counted:?}");
        let permanent = classify(Ok(Err(HandlerError::permanent("invalid"))));
        assert!(matches!(permanent, Outcome::Failed { permanent: true, .. }), "{permanent:?}");
        let panicked = classify(Err("the handler panicked at src/x.rs:1:1: boom".into()));
        match panicked.into_error(|| Location { group: "g".into(), topic: "t".into(), partition: 0, offset: 7 }) {
            Some((error, FailureKind::Counted)) => assert!(error.to_string().contains("boom"), "{error}"),
            other => panic!("a panic is a counted failure, got {other:?}"),
        }
    }
}
