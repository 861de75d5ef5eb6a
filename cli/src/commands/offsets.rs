//! `exactly offsets show|set|reset` and `exactly lag`.

use serde::Serialize;

use super::positions::{self, PartitionRow, Store};
use crate::args::{Connection, GroupArgs, ResetArgs, SetArgs};
use crate::error::{Context, Error};
use crate::{kafka, render, timestamp};

#[derive(Serialize)]
struct Positions<'a> {
    group: &'a str,
    mode: &'static str,
    partitions: Vec<PartitionRow>,
    total_lag: Option<i64>,
}

async fn positions<'a>(connection: &Connection, group: &'a GroupArgs) -> Result<Positions<'a>, Error> {
    let store = positions::store(connection, group).await?;
    let partitions = positions::rows(connection, group, &store).await?;
    let total_lag = connection.has_brokers().then(|| partitions.iter().filter_map(|r| r.lag).sum());
    Ok(Positions { group: &group.group, mode: store.name(), partitions, total_lag })
}

/// The cells every positions table starts with: topic, partition, position, end, lag.
fn position_cells(row: &PartitionRow) -> Vec<String> {
    vec![
        row.topic.clone(),
        row.partition.to_string(),
        render::or_dash(row.position),
        render::or_dash(row.end),
        render::or_dash(row.lag),
    ]
}

pub(crate) async fn show(connection: &Connection, group: &GroupArgs, json: bool) -> Result<(), Error> {
    let shown = positions(connection, group).await?;
    render::print(json, &shown, |shown| {
        let mut table = render::table(&["topic", ">partition", ">position", ">end", ">lag", ">epoch", "updated"]);
        for row in &shown.partitions {
            let mut cells = position_cells(row);
            cells.push(render::or_dash(row.epoch));
            cells.push(row.updated_at.clone().unwrap_or_else(|| "-".into()));
            table.add_row(cells);
        }
        table
    });
    Ok(())
}

pub(crate) async fn lag(connection: &Connection, group: &GroupArgs, json: bool) -> Result<(), Error> {
    if !connection.has_brokers() {
        return Err(Error::Usage("lag is measured against Kafka: pass --brokers or set EXACTLY_BROKERS".into()));
    }
    let shown = positions(connection, group).await?;
    render::print(json, &shown, |shown| {
        let mut table = render::table(&["topic", ">partition", ">position", ">end", ">lag"]);
        for row in &shown.partitions {
            table.add_row(position_cells(row));
        }
        table.add_row(vec![
            "total".into(),
            String::new(),
            String::new(),
            String::new(),
            render::or_dash(shown.total_lag),
        ]);
        table
    });
    Ok(())
}

/// A position change, before and after.
#[derive(Serialize)]
struct Change {
    topic: String,
    partition: i32,
    before: Option<i64>,
    after: i64,
}

#[derive(Serialize)]
struct Changes<'a> {
    group: &'a str,
    mode: &'static str,
    dry_run: bool,
    changes: Vec<Change>,
}

fn one_topic(group: &GroupArgs) -> Result<&str, Error> {
    match group.topics.as_slice() {
        [topic] => Ok(topic),
        _ => Err(Error::Usage("name exactly one --topic".into())),
    }
}

/// The store to change. In `auto` mode a group with positions in neither store is
/// ambiguous: the tool will not guess where to write.
async fn store_to_change(connection: &Connection, group: &GroupArgs) -> Result<Store, Error> {
    let store = positions::store(connection, group).await?;
    if let (Store::Kafka, crate::args::Mode::Auto) = (&store, group.mode) {
        let config = connection.kafka()?;
        let topic = one_topic(group)?;
        let partitions = kafka::partitions(&config, topic)?;
        if kafka::committed(&config, &group.group, topic, &partitions)?.iter().all(|(_, o)| o.is_none()) {
            return Err(Error::Usage(format!(
                "group {} has positions neither in PostgreSQL nor in Kafka for {topic}: \
                 say where to write them with --mode database or --mode kafka",
                group.group
            )));
        }
    }
    Ok(store)
}

async fn apply(
    connection: &Connection,
    group: &GroupArgs,
    store: &Store,
    targets: Vec<(i32, i64)>,
    dry_run: bool,
    json: bool,
) -> Result<(), Error> {
    let topic = one_topic(group)?;
    let current = positions::rows(connection, group, store).await?;
    let before = |partition: i32| current.iter().find(|r| r.topic == topic && r.partition == partition)?.position;
    let changes: Vec<Change> = targets
        .iter()
        .map(|&(partition, after)| Change { topic: topic.to_owned(), partition, before: before(partition), after })
        .collect();
    if !dry_run {
        match store {
            Store::Database(pool) => {
                let bar = render::progress(changes.len() as u64, "setting positions", json);
                for change in &changes {
                    exactly::offsets::set(pool, &group.group, topic, change.partition, change.after).await.context(
                        || format!("cannot set the position of {} in {topic}/{}", group.group, change.partition),
                    )?;
                    bar.inc(1);
                }
                bar.finish_and_clear();
            }
            Store::Kafka => kafka::commit(&connection.kafka()?, &group.group, topic, &targets)?,
        }
    }
    let shown = Changes { group: &group.group, mode: store.name(), dry_run, changes };
    render::print(json, &shown, |shown| {
        let mut table = render::table(&["topic", ">partition", ">before", ">after"]);
        for change in &shown.changes {
            table.add_row(vec![
                change.topic.clone(),
                change.partition.to_string(),
                render::or_dash(change.before),
                change.after.to_string(),
            ]);
        }
        table
    });
    if dry_run && !json {
        println!("dry run: nothing changed");
    }
    Ok(())
}

pub(crate) async fn set(connection: &Connection, args: &SetArgs, json: bool) -> Result<(), Error> {
    one_topic(&args.group)?;
    if args.offset < 0 {
        return Err(Error::Usage(format!("offset {} is negative", args.offset)));
    }
    let store = store_to_change(connection, &args.group).await?;
    positions::refuse_if_live(connection, &args.group.group, args.force)?;
    apply(connection, &args.group, &store, vec![(args.partition, args.offset)], false, json).await
}

/// Where `reset --to` points.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Time(i64),
}

fn target(text: &str) -> Result<Target, Error> {
    match text {
        "earliest" => Ok(Target::Earliest),
        "latest" => Ok(Target::Latest),
        _ => {
            if let Ok(offset) = text.parse::<i64>() {
                return if offset >= 0 {
                    Ok(Target::Offset(offset))
                } else {
                    Err(Error::Usage(format!("offset {offset} is negative")))
                };
            }
            timestamp::parse_millis(text).map(Target::Time).ok_or_else(|| {
                Error::Usage(format!(
                    "--to {text}: expected earliest, latest, an offset, or a time such as 2026-11-26T10:00:00Z"
                ))
            })
        }
    }
}

pub(crate) async fn reset(connection: &Connection, args: &ResetArgs, json: bool) -> Result<(), Error> {
    let topic = one_topic(&args.group)?;
    let to = target(&args.to)?;
    if !connection.has_brokers() {
        return Err(Error::Usage(
            "reset reads the partitions from Kafka: pass --brokers or set EXACTLY_BROKERS".into(),
        ));
    }
    let store = store_to_change(connection, &args.group).await?;
    if !args.dry_run {
        positions::refuse_if_live(connection, &args.group.group, args.force)?;
    }
    let config = connection.kafka()?;
    let all = kafka::partitions(&config, topic)?;
    let partitions = if args.partitions.is_empty() { all.clone() } else { args.partitions.clone() };
    if let Some(unknown) = partitions.iter().find(|p| !all.contains(p)) {
        return Err(Error::NotFound(format!("{topic} has no partition {unknown} (it has {})", all.len())));
    }
    let targets = match to {
        Target::Offset(offset) => partitions.iter().map(|p| (*p, offset)).collect(),
        Target::Time(millis) => kafka::offsets_for_time(&config, topic, &partitions, millis)?,
        Target::Earliest | Target::Latest => kafka::ends(&config, topic, &partitions)?
            .into_iter()
            .map(|(p, ends)| (p, if matches!(to, Target::Earliest) { ends.low } else { ends.high }))
            .collect(),
    };
    apply(connection, &args.group, &store, targets, args.dry_run, json).await
}

/// Properties of `reset --to` over generated text: each accepted form gives its target, a
/// negative offset and anything else are refused saying why.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn an_offset_in_any_form_is_that_offset(offset in 0..=i64::MAX, plus in any::<bool>(), zeros in 0..3usize) {
            let text = format!("{}{}{offset}", if plus { "+" } else { "" }, "0".repeat(zeros));
            prop_assert_eq!(target(&text).ok(), Some(Target::Offset(offset)), "{}", text);
        }

        #[test]
        fn a_negative_offset_is_refused(offset in i64::MIN..0) {
            let error = target(&offset.to_string()).err().map(|e| e.to_string()).unwrap_or_default();
            prop_assert!(error.contains("negative"), "{}", error);
        }

        #[test]
        fn a_time_is_the_instant_it_names(millis in 0i64..253_402_300_799_000) {
            let time = jiff::Timestamp::from_millisecond(millis).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(target(&time.to_string()).ok(), Some(Target::Time(millis)), "{}", time);
        }

        #[test]
        fn anything_else_is_refused_naming_the_forms_taken(text in prop_oneof![any::<String>(), "[a-z]{0,9}", "[0-9a-z:+-]{0,12}"]) {
            let expected = match text.as_str() {
                "earliest" => Some(Target::Earliest),
                "latest" => Some(Target::Latest),
                _ => text.parse::<i64>().ok().filter(|n| *n >= 0).map(Target::Offset)
                    .or_else(|| timestamp::parse_millis(&text).map(Target::Time)),
            };
            match target(&text) {
                Ok(got) => prop_assert_eq!(Some(got), expected, "{}", text),
                Err(error) => {
                    prop_assert_eq!(expected, None, "{}", text);
                    let error = error.to_string();
                    prop_assert!(error.contains("negative") || error.contains("expected earliest, latest"), "{}", error);
                }
            }
        }
    }
}
