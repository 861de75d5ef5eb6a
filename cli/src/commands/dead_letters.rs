//! `exactly dead-letters list|show|replay`.

use serde::Serialize;

use crate::args::Connection;
use crate::error::{Context, Error};
use crate::render;

/// A dead letter as printed: bytes as text (or hex), headers included.
#[derive(Serialize)]
struct Shown {
    id: i64,
    group: String,
    topic: String,
    partition: i32,
    offset: i64,
    key: String,
    payload: String,
    headers: Vec<(String, String)>,
    error: String,
    attempts: i32,
    created_at: String,
}

impl From<exactly::dead_letters::DeadLetter> for Shown {
    fn from(letter: exactly::dead_letters::DeadLetter) -> Self {
        Shown {
            id: letter.id,
            key: render::bytes(letter.key.as_deref()),
            payload: render::bytes(letter.payload.as_deref()),
            headers: letter
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), render::bytes(value.as_deref())))
                .collect(),
            group: letter.group,
            topic: letter.topic,
            partition: letter.partition,
            offset: letter.offset,
            error: letter.error,
            attempts: letter.attempts,
            created_at: letter.created_at,
        }
    }
}

/// The first line of `text`, cut to `width` characters.
fn short(text: &str, width: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > width {
        format!("{}…", line.chars().take(width).collect::<String>())
    } else {
        line.to_owned()
    }
}

pub(crate) async fn list(
    connection: &Connection,
    group: &str,
    limit: i64,
    after: i64,
    json: bool,
) -> Result<(), Error> {
    let pool = connection.pool().await?;
    let letters = exactly::dead_letters::page(&pool, group, after, limit.max(1))
        .await
        .context(|| format!("cannot read the dead letters of group {group}"))?;
    let shown: Vec<Shown> = letters.into_iter().map(Shown::from).collect();
    render::print(json, &shown, |shown| {
        let mut table = render::table(&[">id", "topic", ">partition", ">offset", "key", ">attempts", "error", "since"]);
        for letter in shown {
            table.add_row(vec![
                letter.id.to_string(),
                letter.topic.clone(),
                letter.partition.to_string(),
                letter.offset.to_string(),
                short(&letter.key, 24),
                letter.attempts.to_string(),
                short(&letter.error, 60),
                letter.created_at.clone(),
            ]);
        }
        table
    });
    Ok(())
}

pub(crate) async fn show(connection: &Connection, id: i64, json: bool) -> Result<(), Error> {
    let pool = connection.pool().await?;
    let letter = exactly::dead_letters::get(&pool, id)
        .await
        .context(|| format!("cannot read dead letter {id}"))?
        .ok_or_else(|| Error::NotFound(format!("there is no dead letter {id}")))?;
    render::print(json, &Shown::from(letter), |letter| {
        let mut table = render::table(&["field", "value"]);
        for (field, value) in [
            ("id", letter.id.to_string()),
            ("group", letter.group.clone()),
            ("from", format!("{}/{} at offset {}", letter.topic, letter.partition, letter.offset)),
            ("key", letter.key.clone()),
            ("payload", letter.payload.clone()),
            ("error", letter.error.clone()),
            ("attempts", letter.attempts.to_string()),
            ("dead since", letter.created_at.clone()),
        ] {
            table.add_row(vec![field.to_owned(), value]);
        }
        for (name, value) in &letter.headers {
            table.add_row(vec![format!("header {name}"), value.clone()]);
        }
        table
    });
    Ok(())
}

#[derive(Serialize)]
struct ReplaySummary {
    group: String,
    moved: Vec<i64>,
    missing: Vec<i64>,
    outbox_rows_waiting: i64,
}

pub(crate) async fn replay(
    connection: &Connection,
    group: &str,
    ids: Vec<i64>,
    all: bool,
    to: Option<&str>,
    json: bool,
) -> Result<(), Error> {
    const CHUNK: i64 = 500;
    let pool = connection.pool().await?;
    let ids = if all {
        let mut every = Vec::new();
        loop {
            let after = every.last().copied().unwrap_or(0);
            let page = exactly::dead_letters::page(&pool, group, after, CHUNK)
                .await
                .context(|| format!("cannot read the dead letters of group {group}"))?;
            if page.is_empty() {
                break;
            }
            every.extend(page.iter().map(|letter| letter.id));
        }
        every
    } else {
        ids
    };
    let bar = render::progress(ids.len() as u64, "replaying", json);
    let mut summary =
        ReplaySummary { group: group.to_owned(), moved: Vec::new(), missing: Vec::new(), outbox_rows_waiting: 0 };
    for chunk in ids.chunks(CHUNK as usize) {
        let replayed = exactly::dead_letters::replay(&pool, group, chunk, to)
            .await
            .context(|| format!("cannot replay dead letters of group {group} (nothing of this chunk moved)"))?;
        summary.moved.extend(replayed.moved);
        summary.missing.extend(replayed.missing);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    summary.outbox_rows_waiting =
        exactly::outbox::backlog(&pool).await.context(|| "cannot read the outbox backlog".to_owned())?;
    render::print(json, &summary, |summary| {
        let mut table = render::table(&["dead letters", ">count", "ids"]);
        let ids = |ids: &[i64]| short(&ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", "), 60);
        table.add_row(vec!["moved to the outbox".into(), summary.moved.len().to_string(), ids(&summary.moved)]);
        table.add_row(vec!["not found".into(), summary.missing.len().to_string(), ids(&summary.missing)]);
        table.add_row(vec![
            "outbox rows waiting for the relay".into(),
            summary.outbox_rows_waiting.to_string(),
            String::new(),
        ]);
        table
    });
    Ok(())
}
