//! `exactly transactions list|abort`: find transactions left open on a topic (they hold
//! the last stable offset back, so every read_committed reader stops there) and fence the
//! transactional id that holds one.
//!
//! Two views: the ongoing transactions as their coordinators describe them (transactional
//! id, producer, start, timeout, partitions; Kafka's ListTransactions and
//! DescribeTransactions, see [`crate::admin`]), and, for the topics named, the partitions
//! whose last stable offset is held back, with the time of the record where the open
//! transaction starts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::args::Connection;
use crate::error::Error;
use crate::{admin, kafka, render};

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
    let now = now_ms();
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
    render::print(json, open, held_table);
}

fn held_table(open: &Vec<Open>) -> comfy_table::Table {
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
}

/// An ongoing transaction and how long it has been open.
#[derive(Serialize)]
struct Ongoing {
    #[serde(flatten)]
    transaction: admin::Transaction,
    open_for_seconds: f64,
}

/// What `transactions list` prints.
#[derive(Serialize)]
struct Listing {
    /// Ongoing transactions (touching the topics named, if any); `None` when the brokers
    /// cannot be asked (see `note`).
    transactions: Option<Vec<Ongoing>>,
    /// Partitions of the topics named whose last stable offset is held back.
    held_partitions: Vec<Open>,
    /// Why `transactions` is missing.
    note: Option<String>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn list(connection: &Connection, topics: &[String], json: bool) -> Result<(), Error> {
    let config = connection.kafka()?;
    let (transactions, note) = if admin::usable(&config) {
        let now = now_ms();
        let ongoing = tokio::task::block_in_place(|| admin::ongoing(&config))?
            .into_iter()
            .filter(|t| topics.is_empty() || t.partitions.iter().any(|p| touches(p, topics)))
            .map(|transaction| Ongoing {
                open_for_seconds: (now - transaction.started_ms) as f64 / 1000.0,
                transaction,
            })
            .collect();
        (Some(ongoing), None)
    } else {
        let note = "the transactional ids cannot be listed with this SASL mechanism (the tool's admin calls \
                    log in with PLAIN or SCRAM only; Kafka's kafka-transactions.sh can): the held partitions still \
                    show where transactions are open";
        (None, Some(note.to_owned()))
    };
    let held_partitions = tokio::task::block_in_place(|| open_transactions(connection, topics))?;
    let listing = Listing { transactions, held_partitions, note };
    if json {
        render::json(&listing);
        return Ok(());
    }
    match &listing.transactions {
        Some(transactions) if transactions.is_empty() => println!("no transaction is ongoing{}", on(topics)),
        Some(transactions) => {
            let mut table = render::table(&[
                "transactional id",
                ">producer",
                ">open for",
                ">timeout",
                "partitions",
                ">coordinator",
            ]);
            for ongoing in transactions {
                let t = &ongoing.transaction;
                table.add_row(vec![
                    t.transactional_id.clone(),
                    format!("{} (epoch {})", t.producer_id, t.producer_epoch),
                    format!("{:.1} s", ongoing.open_for_seconds),
                    format!("{:.0} s", f64::from(t.timeout_ms) / 1000.0),
                    t.partitions.join(", "),
                    t.coordinator.to_string(),
                ]);
            }
            println!("{table}");
        }
        None => println!("note: {}", listing.note.as_deref().unwrap_or_default()),
    }
    if !topics.is_empty() {
        if listing.held_partitions.is_empty() {
            println!("no partition of {} is held back by an open transaction", topics.join(", "));
        } else {
            println!("{}", held_table(&listing.held_partitions));
        }
    }
    Ok(())
}

/// Whether `partition` (`topic/partition`) is of one of `topics`.
fn touches(partition: &str, topics: &[String]) -> bool {
    partition.rsplit_once('/').is_some_and(|(name, _)| topics.iter().any(|topic| topic == name))
}

fn on(topics: &[String]) -> String {
    if topics.is_empty() { String::new() } else { format!(" on {}", topics.join(", ")) }
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
