//! `exactly migrate`: create or upgrade exactly's tables.

use serde::Serialize;

use crate::args::Connection;
use crate::error::{Context, Error};
use crate::render;

#[derive(Serialize)]
struct Step {
    version: i64,
    name: &'static str,
    status: &'static str,
}

pub(crate) async fn run(connection: &Connection, json: bool) -> Result<(), Error> {
    let pool = connection.pool().await?;
    let before = exactly::offsets::migration_status(&pool)
        .await
        .context(|| "cannot read which of exactly's migrations the database has".to_owned())?;
    exactly::migrate(&pool)
        .await
        .context(|| "cannot create or upgrade exactly's tables (schema `exactly`)".to_owned())?;
    let steps: Vec<Step> = before
        .iter()
        .map(|m| Step {
            version: m.version,
            name: m.name,
            status: if m.applied { "already applied" } else { "applied now" },
        })
        .collect();
    render::print(json, &steps, |steps| {
        let mut table = render::table(&[">version", "migration", "status"]);
        for step in steps {
            table.add_row(vec![step.version.to_string(), step.name.to_owned(), step.status.to_owned()]);
        }
        table
    });
    Ok(())
}
