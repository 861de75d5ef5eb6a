//! The re-drive of dead letters calls the handler as the runtime does, through the same
//! pipeline step: a transient database failure under it (a serialization failure) is
//! retried without counting as an attempt, and the handler runs in its `message` span with
//! the dead letter's trace context, which the records it emits carry on.

use std::sync::Arc;

use exactly_integration_tests::captured::Captured;
use exactly_integration_tests::postgres::Postgres;
use exactly_integration_tests::recorder::{Recorder, TransientErrors, create_effects_table, effect_counts};
use exactly_integration_tests::unique;
use tracing_subscriber::fmt::format::FmtSpan;

/// A `traceparent` of the W3C specification's example.
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

// One thread: the subscriber set for this test sees the spans the re-drive opens.
#[tokio::test(flavor = "current_thread")]
async fn a_redriven_dead_letter_is_handled_as_the_runtime_handles_a_message() -> anyhow::Result<()> {
    let pool = Postgres::shared().await?.database().await?.pool().await?;
    exactly::migrate(&pool).await?;
    create_effects_table(&pool).await?;
    let (group, topic, output) = (unique("redrive-pipeline"), unique("orders"), unique("out"));
    // A dead letter tried twice, with a trace context.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO exactly.dead_letters
             (group_id, topic, partition, message_offset, key, payload, header_names, header_values, error, attempts)
         VALUES ($1, $2, 0, 7, 'k', 'm-7', ARRAY['traceparent'], ARRAY[$3::bytea], 'it failed', 2) RETURNING id",
    )
    .bind(&group)
    .bind(&topic)
    .bind(TRACEPARENT.as_bytes())
    .fetch_one(&pool)
    .await?;
    // Fixed now, but PostgreSQL raises a serialization failure under its first two calls.
    let transient =
        Arc::new(TransientErrors { payloads: vec![("m-7".into(), "40001")], times: 2, ..Default::default() });
    let mut fixed = Recorder::new(&topic, &group, "redrive");
    fixed.transient = Some(Arc::clone(&transient));
    fixed.emit_to = Some(output.clone());

    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("exactly=debug")
        .with_ansi(false)
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(move || sink.clone())
        .finish();
    let redriven = {
        let _subscriber = tracing::subscriber::set_default(subscriber);
        exactly::dead_letters::redrive(&pool, &fixed, &[id]).await?
    };

    assert_eq!(redriven.handled, vec![id], "{redriven:?}");
    assert_eq!(transient.calls("m-7"), 3, "two serialization failures, each tried again, then handled");
    assert_eq!(effect_counts(&pool, &group).await?, (1, 1), "applied once");
    // Every call ran in the message's span, as its third try: the transient failures did
    // not count. The span carries the letter's trace.
    let log = captured.text();
    let calls: Vec<&str> = log.lines().filter(|line| line.contains("message{") && line.contains("close")).collect();
    assert_eq!(calls.len(), 3, "one span per handler call: {log}");
    for call in &calls {
        assert!(call.contains(&format!("topic={topic}")) && call.contains("offset=7"), "{call}");
        assert!(call.contains("attempt=3"), "a transient failure counted as an attempt: {call}");
        assert!(call.contains(&format!("trace_id={TRACE_ID}")), "no trace context: {call}");
    }
    // What it emitted carries the trace on, with the message's processing as parent.
    let (names, values): (Vec<String>, Vec<Vec<u8>>) =
        sqlx::query_as("SELECT header_names, header_values FROM exactly.outbox WHERE topic = $1")
            .bind(&output)
            .fetch_one(&pool)
            .await?;
    let traceparent =
        names.iter().position(|name| name == "traceparent").map(|at| String::from_utf8_lossy(&values[at]));
    let traceparent = traceparent.ok_or_else(|| anyhow::anyhow!("the emitted record has no traceparent: {names:?}"))?;
    assert!(traceparent.starts_with(&format!("00-{TRACE_ID}-")), "{traceparent}");
    assert!(
        !traceparent.contains("b7ad6b7169203331"),
        "the parent is the processing span, not the letter's: {traceparent}"
    );
    Ok(())
}
