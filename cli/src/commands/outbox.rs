//! `exactly outbox status`.

use crate::args::Connection;
use crate::error::{Context, Error};
use crate::render;

pub(crate) async fn status(connection: &Connection, json: bool) -> Result<(), Error> {
    let pool = connection.pool().await?;
    let status = exactly::outbox::status(&pool)
        .await
        .context(|| "cannot read the outbox (did `exactly migrate` run?)".to_owned())?;
    render::print(json, &status, |status| {
        let mut table = render::table(&["topic", ">rows waiting"]);
        for (topic, rows) in &status.per_topic {
            table.add_row(vec![topic.clone(), rows.to_string()]);
        }
        let oldest = status.oldest_age_seconds.map(|age| format!(" (oldest {age:.1} s)"));
        table.add_row(vec![format!("total{}", oldest.unwrap_or_default()), status.rows.to_string()]);
        table
    });
    Ok(())
}
