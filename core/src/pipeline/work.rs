//! What a group runs on a partition's messages: a per-message [`Handler`], called once per
//! message, or a [`BatchHandler`], called once for them all. The modes' loops see only
//! [`Work`], so one loop serves both kinds.

use std::future::Future;
use std::ops::Deref;

use super::invoke::{Call, Cause, FailureKind, Outcome, invoke, invoke_batch};
use crate::api::batch::BatchHandler;
use crate::api::context::Context;
use crate::api::handler::{Consumes, Handler};
use crate::api::message::Message;
use crate::api::subscription::Subscription;
use crate::kafka::trace_context::TraceContext;

/// One message of a run, as the loop hands it over: which try it is, and its trace.
pub(crate) struct Entry<'m, K, P> {
    pub(crate) message: &'m Message<K, P>,
    pub(crate) call: Call<'m>,
    pub(crate) trace: Option<TraceContext>,
}

/// How a run of messages went.
pub(crate) enum Ran {
    /// Every message was handled: their effects stand if the transaction commits.
    Handled,
    /// It failed: at the entry `at`, or somewhere in the run (a batch handler that named
    /// no message), with why and how it counts.
    Failed { at: Option<usize>, cause: Cause, kind: FailureKind },
}

impl Ran {
    /// The outcome of a run of one message.
    pub(crate) fn into_outcome(self) -> Outcome {
        match self {
            Ran::Handled => Outcome::Handled,
            Ran::Failed { cause, kind: FailureKind::Transient, .. } => Outcome::Transient(cause),
            Ran::Failed { cause, kind, .. } => Outcome::Failed { cause, permanent: kind == FailureKind::Permanent },
        }
    }

    fn failed(at: Option<usize>, outcome: Outcome) -> Self {
        match outcome.into_failure() {
            None => Ran::Handled,
            Some((cause, kind)) => Ran::Failed { at, cause, kind },
        }
    }
}

/// User code that handles runs of one partition's messages in offset order.
pub(crate) trait Work: Consumes + Send + Sync {
    /// Whether it is given a batch at once (a [`BatchHandler`]) rather than one message.
    const BATCHES: bool;

    /// Hands `entries` (at least one) to the user code through `cx`; stops at the first
    /// failure.
    fn run<'a>(
        &'a self,
        entries: &'a [Entry<'a, Self::Key, Self::Payload>],
        cx: &'a mut Context<'_, Self::Mode>,
    ) -> impl Future<Output = Ran> + Send + 'a;
}

/// A [`Handler`] (behind any pointer: a `Box` in a group, a reference in a re-drive),
/// called on each message in turn.
pub(crate) struct PerMessage<P>(pub(crate) P);

/// A [`BatchHandler`] (behind any pointer), called once on a whole run.
pub(crate) struct PerBatch<P>(pub(crate) P);

impl<P> Work for PerMessage<P>
where
    P: Deref + Send + Sync,
    P::Target: Handler + Sized,
{
    const BATCHES: bool = false;

    async fn run<'a>(
        &'a self,
        entries: &'a [Entry<'a, Self::Key, Self::Payload>],
        cx: &'a mut Context<'_, Self::Mode>,
    ) -> Ran {
        for (index, entry) in entries.iter().enumerate() {
            let outcome = invoke(&*self.0, entry.message, cx, entry.call, entry.trace.clone()).await;
            if !matches!(outcome, Outcome::Handled) {
                return Ran::failed(Some(index), outcome);
            }
        }
        Ran::Handled
    }
}

impl<P> Work for PerBatch<P>
where
    P: Deref + Send + Sync,
    P::Target: BatchHandler + Sized,
{
    const BATCHES: bool = true;

    async fn run<'a>(
        &'a self,
        entries: &'a [Entry<'a, Self::Key, Self::Payload>],
        cx: &'a mut Context<'_, Self::Mode>,
    ) -> Ran {
        let Some(first) = entries.first() else { return Ran::Handled };
        let messages: Vec<&Message<Self::Key, Self::Payload>> = entries.iter().map(|entry| entry.message).collect();
        let (outcome, at) = invoke_batch(&*self.0, &messages, cx, first.call).await;
        Ran::failed(at, outcome)
    }
}

/// The wrapped handler's subscription and types, as its own.
macro_rules! consumes_as_inner {
    ($wrapper:ident, $bound:ident) => {
        impl<P> Consumes for $wrapper<P>
        where
            P: Deref,
            P::Target: $bound,
        {
            type Key = <P::Target as Consumes>::Key;
            type Payload = <P::Target as Consumes>::Payload;
            type Codec = <P::Target as Consumes>::Codec;
            type Mode = <P::Target as Consumes>::Mode;

            fn subscription(&self) -> Subscription {
                self.0.subscription()
            }
        }
    };
}

consumes_as_inner!(PerMessage, Handler);
consumes_as_inner!(PerBatch, BatchHandler);
