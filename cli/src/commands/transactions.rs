//! `exactly transactions list|abort`: find transactions left open on a topic (they hold
//! the last stable offset back, so every read_committed reader stops there) and fence the
//! transactional id that holds one.
//!
//! librdkafka has no admin call to list transactional ids (Kafka's `kafka-transactions.sh
//! find-hanging` does); what the tool can see is each partition's last stable offset
//! against its high watermark, and the time of the record where the open transaction
//! starts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::args::Connection;
use crate::error::Error;
use crate::{kafka, render};

/// A partition with an open transaction.
#[derive(Debug, Serialize)]
struct Open {
    topic: String,
    partition: i32,
    /// The first offset of the oldest open transaction.
    last_stable_offset: i64,
    high_watermark: i64,
    /// When its first record was written (ms since the epoch), if it could be read.
    open_since_ms: Option<i64>,
    /// How long ago that was.
    open_for_seconds: Option<f64>,
}

fn open_transactions(connection: &Connection, topics: &[String]) -> Result<Vec<Open>, Error> {
    let config = connection.kafka()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut open = Vec::new();
    for topic in topics {
        let partitions = kafka::partitions(&config, topic)?;
        for (partition, ends) in kafka::ends(&config, topic, &partitions)? {
            if ends.stable < ends.high {
                let since = kafka::timestamp_at(&config, topic, partition, ends.stable)?;
                open.push(Open {
                    topic: topic.clone(),
                    partition,
                    last_stable_offset: ends.stable,
                    high_watermark: ends.high,
                    open_since_ms: since,
                    open_for_seconds: since.map(|t| (now - t) as f64 / 1000.0),
                });
            }
        }
    }
    Ok(open)
}

fn print_open(open: &Vec<Open>, topics: &[String], json: bool) {
    if open.is_empty() && !json {
        println!("no transaction is open on {}", topics.join(", "));
        return;
    }
    render::print(json, open, |open| {
        let mut table = render::table(&["topic", ">partition", ">last stable offset", ">high watermark", ">open for"]);
        for row in open {
            table.add_row(vec![
                row.topic.clone(),
                row.partition.to_string(),
                row.last_stable_offset.to_string(),
                row.high_watermark.to_string(),
                row.open_for_seconds.map_or_else(|| "?".into(), |s| format!("{s:.1} s")),
            ]);
        }
        table
    });
}

pub(crate) fn list(connection: &Connection, topics: &[String], json: bool) -> Result<(), Error> {
    let open = tokio::task::block_in_place(|| open_transactions(connection, topics))?;
    print_open(&open, topics, json);
    Ok(())
}

pub(crate) async fn abort(
    connection: &Connection,
    transactional_id: &str,
    topics: &[String],
    wait: u64,
    json: bool,
) -> Result<(), Error> {
    let config = connection.kafka()?;
    tokio::task::block_in_place(|| kafka::fence(&config, transactional_id))?;
    if !json {
        println!("fenced transactional id {transactional_id}: a transaction it left open is aborted");
    }
    if topics.is_empty() {
        return Ok(());
    }
    // The coordinator writes the abort markers right after fencing; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(wait);
    let open = loop {
        let open = tokio::task::block_in_place(|| open_transactions(connection, topics))?;
        if open.is_empty() || Instant::now() > deadline {
            break open;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    print_open(&open, topics, json);
    if open.is_empty() {
        Ok(())
    } else {
        Err(Error::Unfinished(format!(
            "transactions are still open on {} after fencing {transactional_id}: another transactional id holds them \
             (Kafka's `kafka-transactions.sh find-hanging` names it)",
            topics.join(", ")
        )))
    }
}
