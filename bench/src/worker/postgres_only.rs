//! PostgreSQL alone, with no Kafka: `spec.rows` rows of `spec.row_bytes` bytes written in
//! transactions of `spec.batch` rows with one [`Statement`] shape, on `spec.concurrency`
//! connections at once. It is the database's ceiling for that shape and that many
//! connections, on the same server and table as the systems measured. Prints its own
//! timing (`RESULT` line).

use std::time::Instant;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::WorkerSpec;
use super::rows::{Row, RowWriter, Statement};
use crate::process::{Outcome, peak_rss_kib};

/// Writes the rows, then prints the `RESULT` line.
pub(super) async fn run(spec: &WorkerSpec, statement: Statement) -> anyhow::Result<()> {
    let connections = spec.concurrency.max(1);
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(connections)?)
        .min_connections(u32::try_from(connections)?)
        .connect(&spec.database_url)
        .await
        .context("cannot connect to PostgreSQL")?;
    let writer = RowWriter::new(&spec.table, statement)?;
    let batches = spec.rows.div_ceil(spec.batch as u64);
    let started = Instant::now();
    // Connection `lane` writes batches lane, lane + connections, ...: the same number each.
    let lanes: Vec<_> = (0..connections as u64)
        .map(|lane| {
            let lane_batches = (lane..batches).step_by(connections);
            tokio::spawn(write_batches(pool.clone(), writer.clone(), spec.clone(), lane_batches.collect()))
        })
        .collect();
    for lane in lanes {
        lane.await??;
    }
    let outcome = Outcome {
        messages: spec.rows,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_kib: peak_rss_kib(std::process::id()).unwrap_or_default(),
    };
    println!("RESULT {}", serde_json::to_string(&outcome)?);
    Ok(())
}

/// Writes each of `batches` (numbered from 0, `spec.batch` rows each, the last one short)
/// in a transaction of its own. Rows go to partition 0, offset = row number.
async fn write_batches(pool: PgPool, writer: RowWriter, spec: WorkerSpec, batches: Vec<u64>) -> anyhow::Result<()> {
    let payload = crate::bed::payload(spec.row_bytes);
    let mut conn = pool.acquire().await?;
    for batch in batches {
        let first = batch * spec.batch as u64;
        let rows = (first..(first + spec.batch as u64).min(spec.rows))
            .map(|offset| Ok(Row { partition: 0, offset: i64::try_from(offset)?, payload: payload.clone() }))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        writer.write(&mut tx, &rows).await?;
        tx.commit().await?;
    }
    Ok(())
}
