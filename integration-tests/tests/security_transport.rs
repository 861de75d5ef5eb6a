//! Transport security against the real thing: a broker whose only listeners speak SASL over
//! TLS (SCRAM-SHA-512 and PLAIN, certificates made for this run) and a PostgreSQL that
//! refuses connections without TLS, reached with `sslmode=verify-full`.
//!
//! The runtime processes exactly once through both; wrong credentials and an untrusted
//! certificate stop it within seconds with an error that says so; and the servers really
//! refuse what they should (plaintext, no login, wrong CA), so these tests cannot pass
//! against an open listener.

use std::time::{Duration, Instant};

use exactly::{Error, Runtime};
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::copy_check::{keyed_inputs, verify_copy};
use exactly_integration_tests::pki::TestCa;
use exactly_integration_tests::recorder::{Recorder, create_effects_table, effect_counts};
use exactly_integration_tests::support::{run_until_it_stops, secure_builder, wait_for_committed};
use exactly_integration_tests::{Kafka, Postgres, produce, unique, wait_until};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::{Connection, PgConnection};

const WAIT: Duration = Duration::from_secs(180);
/// How soon a refused login or certificate must stop the runtime.
const FAIL_FAST: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mode_copies_exactly_once_over_sasl_ssl_with_scram() -> anyhow::Result<()> {
    let kafka = Kafka::secure_shared().await?;
    let user = kafka.add_scram_user(&unique("svc")).await?;
    let (input, output) = (kafka.unique_topic("in", 3).await?, kafka.unique_topic("out", 3).await?);
    let records = keyed_inputs(600, 12);
    produce(&kafka.client_config(), &input, records.clone()).await?;

    let builder = secure_builder(kafka, &user)?.transactional_id(unique("tx")).handler(Copier::new(
        &input,
        &output,
        &unique("copy"),
    ));
    let runtime = builder.build().await?;
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run_until(std::future::pending()));
    wait_for_committed(kafka, &output, 600, WAIT).await?;
    shutdown.shutdown();
    run.await??;

    let verdict = verify_copy(kafka, &output, &records).await?;
    verdict.assert_exactly_once(600);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_mode_and_outbox_over_sasl_ssl_with_plain_and_postgres_verify_full() -> anyhow::Result<()> {
    let kafka = Kafka::secure_shared().await?;
    let user = kafka.plain_user()?;
    let postgres = Postgres::tls_shared().await?;
    let database = postgres.database().await?;
    assert!(database.url.contains("sslmode=verify-full"), "{}", database.url);
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let (input, output) = (kafka.unique_topic("in", 3).await?, kafka.unique_topic("out", 3).await?);
    let inputs = keyed_inputs(300, 10);
    produce(&kafka.client_config(), &input, inputs.clone()).await?;

    let group = unique("g");
    let mut recorder = Recorder::new(&input, &group, "a");
    recorder.emit_to = Some(output.clone());
    let builder =
        secure_builder(kafka, &user)?.database_url(&database.url).outbox_relay(unique("relay")).handler(recorder);
    let runtime = builder.build().await?;
    let runtime_pool = runtime.pool().cloned().ok_or_else(|| anyhow::anyhow!("no pool"))?;
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run_until(std::future::pending()));
    wait_for_committed(kafka, &output, 300, WAIT).await?;
    wait_until(WAIT, "the outbox to be emptied", || async {
        Ok((exactly::outbox::backlog(&pool).await? == 0).then_some(()))
    })
    .await?;
    // The runtime's own connections are encrypted (the server would refuse others anyway).
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&runtime_pool).await?;
    assert!(encrypted, "the runtime's database connection is not encrypted");
    shutdown.shutdown();
    run.await??;

    assert_eq!(effect_counts(&pool, &group).await?, (300, 300));
    let verdict = verify_copy(kafka, &output, &inputs).await?;
    verdict.assert_exactly_once(300);
    Ok(())
}

/// Metadata within `timeout`, or the error.
async fn metadata(config: ClientConfig, timeout: Duration) -> anyhow::Result<usize> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let consumer: BaseConsumer = config.create()?;
        Ok(consumer.fetch_metadata(None, timeout)?.brokers().len())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_refuses_plaintext_anonymous_and_untrusted_clients() -> anyhow::Result<()> {
    let kafka = Kafka::secure_shared().await?;
    let user = kafka.add_scram_user(&unique("svc")).await?;
    let settings = kafka.client_settings(&user)?;
    assert_eq!(metadata(kafka.config_with(&settings), Duration::from_secs(10)).await?, 1, "the control client");

    // PLAINTEXT on the TLS listener.
    let plaintext = metadata(kafka.config_with(&[]), Duration::from_secs(5)).await;
    assert!(plaintext.is_err(), "a PLAINTEXT client got metadata");
    // TLS without a login.
    let anonymous = vec![
        ("security.protocol".to_owned(), "SSL".to_owned()),
        ("ssl.ca.location".to_owned(), kafka.ca_file()?.display().to_string()),
    ];
    let anonymous = metadata(kafka.config_with(&anonymous), Duration::from_secs(5)).await;
    assert!(anonymous.is_err(), "a client without SASL got metadata");

    // A CA that did not sign the broker's certificate: refused, and said so at once.
    let other_ca = TestCa::new()?;
    let untrusted: Vec<(String, String)> = settings
        .iter()
        .filter(|(k, _)| k != "ssl.ca.location")
        .cloned()
        .chain([("ssl.ca.pem".to_owned(), other_ca.pem.clone())])
        .collect();
    let started = Instant::now();
    let checked = exactly::check_kafka(&kafka.config_with(&untrusted), Duration::from_secs(20)).await;
    match checked {
        Err(error @ Error::KafkaTls { .. }) => {
            let text = error.to_string();
            assert!(text.contains("certificate verify failed"), "unclear: {text}");
            assert!(started.elapsed() < FAIL_FAST, "took {:?}", started.elapsed());
        }
        other => panic!("an untrusted certificate was not refused: {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_the_runtime_at_once_with_a_clear_error() -> anyhow::Result<()> {
    let kafka = Kafka::secure_shared().await?;
    let scram = kafka.add_scram_user(&unique("svc")).await?;
    let input = kafka.unique_topic("in", 1).await?;
    let wrong = "WrongPassword0123456789xyz";
    for user in [scram.with_password(wrong), kafka.plain_user()?.with_password(wrong)] {
        // Kafka mode needs no database: nothing but Kafka can stop it here.
        let builder = secure_builder(kafka, &user)?.transactional_id(unique("tx")).handler(Copier::new(
            &input,
            &unique("out"),
            &unique("copy"),
        ));
        let (outcome, took) = run_until_it_stops(builder, FAIL_FAST).await;
        match outcome {
            Err(error @ Error::KafkaAuthentication { .. }) => {
                let text = error.to_string();
                assert!(text.contains("Authentication failed"), "{}: unclear: {text}", user.mechanism);
                assert!(!text.contains(wrong), "the password was printed: {text}");
                assert!(error.class() == exactly::ErrorClass::Fatal);
                assert!(took < FAIL_FAST, "{}: took {took:?}", user.mechanism);
                if user.mechanism == "SCRAM-SHA-512" {
                    assert!(text.contains("SCRAM-SHA-512"), "the mechanism is not named: {text}");
                }
            }
            other => panic!("{}: a wrong password did not stop the runtime: {other:?}", user.mechanism),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_stops_the_runtime_and_the_relay() -> anyhow::Result<()> {
    let kafka = Kafka::secure_shared().await?;
    let user = kafka.add_scram_user(&unique("svc")).await?;
    let input = kafka.unique_topic("in", 1).await?;
    let other_ca = TestCa::new()?;
    let other_file = other_ca.write_pem_file()?;
    let mut builder = Runtime::builder().brokers(kafka.bootstrap_servers());
    for (key, value) in kafka.client_settings(&user)? {
        let value = if key == "ssl.ca.location" { other_file.display().to_string() } else { value };
        builder = builder.kafka_setting(key, value);
    }
    let builder = builder.transactional_id(unique("tx")).handler(Copier::new(&input, &unique("out"), &unique("c")));
    let (outcome, took) = run_until_it_stops(builder, FAIL_FAST).await;
    match outcome {
        Err(error @ Error::KafkaTls { .. }) => {
            assert!(error.to_string().contains("certificate verify failed"), "unclear: {error}");
            assert!(took < FAIL_FAST, "took {took:?}");
        }
        other => panic!("an untrusted certificate did not stop the runtime: {other:?}"),
    }

    // A relay on its own checks the brokers before it starts.
    let database = Postgres::tls_shared().await?.database().await?;
    let pool = database.pool().await?;
    exactly::migrate(&pool).await?;
    let wrong = "WrongPassword0123456789xyz";
    let mut relay = exactly::outbox::Relay::new(unique("relay"), kafka.bootstrap_servers(), pool);
    for (key, value) in kafka.client_settings(&user.with_password(wrong))? {
        relay = relay.kafka_setting(key, value);
    }
    let started = Instant::now();
    match relay.start().await {
        Err(error @ Error::KafkaAuthentication { .. }) => {
            assert!(!error.to_string().contains(wrong), "the password was printed: {error}");
            assert!(started.elapsed() < FAIL_FAST, "took {:?}", started.elapsed());
        }
        Err(other) => panic!("the relay failed, but unclearly: {other}"),
        Ok(handle) => {
            let _ = handle.stop().await;
            panic!("a relay with a wrong password started");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_works_and_the_server_refuses_plaintext_and_untrusted_certificates() -> anyhow::Result<()>
{
    let postgres = Postgres::tls_shared().await?;
    let mut conn = PgConnection::connect(&postgres.url("postgres")).await?;
    let (ssl, version): (bool, String) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await?;
    assert!(ssl, "verify-full connected without TLS");
    assert!(version.starts_with("TLSv1."), "{version}");
    conn.close().await?;

    // Without TLS: the server refuses (pg_hba `hostnossl ... reject`).
    let plaintext = PgConnection::connect(&postgres.url_with("postgres", "?sslmode=disable")).await;
    let refused = plaintext.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        refused.contains("no encryption") || refused.contains("pg_hba.conf"),
        "plaintext was not refused: {refused}"
    );

    // verify-full with a CA that did not sign the server's certificate: the client refuses.
    let other = TestCa::new()?.write_pem_file()?;
    let untrusted = postgres.url_with("postgres", &format!("?sslmode=verify-full&sslrootcert={}", other.display()));
    let untrusted = PgConnection::connect(&untrusted).await;
    let refused = untrusted.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("certificate verify failed"), "an untrusted certificate was accepted: {refused}");

    // verify-full to a name the certificate does not hold (it names 127.0.0.1 and localhost).
    let ca = postgres.ca()?.write_pem_file()?;
    let wrong_name = format!(
        "postgres://postgres:exactly@127.0.0.2:{}/postgres?sslmode=verify-full&sslrootcert={}",
        postgres.port(),
        ca.display()
    );
    let wrong_name = PgConnection::connect(&wrong_name).await;
    let refused = wrong_name.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        refused.contains("certificate verify failed") || refused.contains("match"),
        "a wrong name was accepted: {refused}"
    );

    // The right CA, a wrong password: refused by the server, over TLS.
    let wrong_password = format!(
        "postgres://postgres:wrong@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        postgres.port(),
        ca.display()
    );
    let refused = PgConnection::connect(&wrong_password).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("password authentication failed"), "a wrong password was accepted: {refused}");
    Ok(())
}
