//! Secrets never reach the logs: a runtime (Database mode with the outbox relay, and Kafka
//! mode) runs with
//! secret Kafka settings, librdkafka's configuration and security debug output on, and a
//! database URL that carries a password and a misspelt parameter; then a runtime with a
//! misspelt secret setting fails. Everything logged at debug level (exactly, sqlx,
//! librdkafka) and every error reported is searched for the secrets.

use std::time::Duration;

use exactly_integration_tests::captured::Captured;
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::recorder::{Recorder, create_effects_table, effect_counts};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Input, Kafka, Postgres, committed_records, produce, unique, wait_until};

const WAIT: Duration = Duration::from_secs(120);

/// Secret Kafka settings librdkafka accepts on a plaintext connection (and ignores there).
const KAFKA_SECRETS: &[(&str, &str)] = &[
    ("sasl.username", "S3CR3T-USER"),
    ("sasl.password", "S3CR3T-PASSWORD"),
    ("ssl.key.password", "S3CR3T-KEY-PASSWORD"),
    ("ssl.keystore.password", "S3CR3T-KEYSTORE-PASSWORD"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_logged_or_reported() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let server = Postgres::shared().await?;
    let (input, output) = (kafka.unique_topic("in", 2).await?, kafka.unique_topic("out", 2).await?);
    let copied = kafka.unique_topic("copied", 2).await?;
    let database = server.database().await?;
    let roles = server.least_privilege_roles(&database).await?;
    roles.migrate_and_grant().await?;
    let admin = database.pool().await?;
    create_effects_table(&admin).await?;
    for grant in ["GRANT SELECT, INSERT ON effects TO {app}", "GRANT USAGE ON SEQUENCE effects_seq_seq TO {app}"] {
        sqlx::query(sqlx::AssertSqlSafe(grant.replace("{app}", &roles.app))).execute(&admin).await?;
    }
    produce(&kafka.client_config(), &input, (0..50).map(|i| Input::to(i % 2, "k", format!("m-{i}")))).await?;
    // The service role's password: unique, so any appearance of it is a leak.
    let password = roles.app_url.split(':').nth(2).and_then(|s| s.split('@').next()).unwrap_or_default().to_owned();
    assert!(password.starts_with("pw_"), "{}", roles.app_url);

    // Set up above (the harness logs its own SQL, role passwords included); capture from here.
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber =
        tracing_subscriber::fmt().with_env_filter("debug").with_ansi(false).with_writer(move || sink.clone()).finish();
    tracing::subscriber::set_global_default(subscriber)?;

    let url = format!("{}?sslmode=prefer&pasword=S3CR3T-URL-PARAMETER", roles.app_url);
    let group = unique("secrets");
    let mut recorder = Recorder::new(&input, &group, "a");
    recorder.emit_to = Some(output);
    // A Kafka-mode handler too: its transactional producer gets the producer settings.
    let copier = Copier::new(&input, &copied, &unique("secrets-copy"));
    let mut runtime = builder(&url)
        .outbox_relay(unique("relay"))
        .transactional_id(unique("tx"))
        .handler(copier)
        .kafka_setting("debug", "conf,security,broker,generic");
    for (key, value) in KAFKA_SECRETS {
        runtime = runtime.kafka_setting(*key, *value).producer_setting(*key, *value);
    }
    let shown = format!("{runtime:?}");
    let running = Running::start(kafka, runtime.handler(recorder)).await?;
    wait_until(WAIT, "50 effects, all published, 50 copies", || async {
        let (effects, _) = effect_counts(&admin, &group).await?;
        let copies = committed_records(kafka.client_config(), &copied).await?.len();
        Ok((effects == 50 && exactly::outbox::backlog(&admin).await? == 0 && copies == 50).then_some(()))
    })
    .await?;
    let reported = running.reported.all();
    running.stop().await?;

    // A misspelt secret setting: librdkafka refuses it, quoting its value.
    let failing = builder(&roles.app_url)
        .migrate(false)
        .kafka_setting("sasl.pasword", "S3CR3T-MISSPELT")
        .handler(Recorder::new(&input, &unique("secrets"), "b"));
    let failed = Running::start(kafka, failing).await?.stop().await.err().map(|e| format!("{e} {e:?}"));
    let failed = failed.unwrap_or_default();
    assert!(failed.contains("sasl.pasword"), "the error names the setting: {failed}");

    let logs = captured.text();
    assert!(logs.contains("librdkafka") && logs.contains("CONF"), "librdkafka's debug output was not captured");
    // librdkafka's configuration dump lists the secret settings, with their values redacted.
    assert!(logs.contains("sasl.password = [redacted]"), "no configuration dump with the secrets captured");
    assert!(logs.contains("pasword"), "the dropped URL parameter is named: {}", logs.len());
    for (what, text) in [("the logs", &logs), ("the reported errors", &reported.join("\n")), ("the error", &failed)] {
        for line in text.lines() {
            assert!(!line.contains("S3CR3T") && !line.contains(&password), "{what} show a secret: {line}");
        }
    }
    assert!(!shown.contains("S3CR3T") && !shown.contains(&password), "{shown}");
    Ok(())
}
