//! Least privilege on Kafka: a broker that enforces ACLs (KRaft's `StandardAuthorizer`,
//! SASL over TLS), and service users holding exactly the ACLs of the Security chapter,
//! granted by running the chapter's own script (`docs/src/security/kafka-acls.sh`).
//!
//! Kafka mode, and Database mode with the outbox relay, process exactly once under those
//! ACLs and nothing more; without any one of them the runtime stops within seconds with
//! [`Error::KafkaAuthorization`] naming what it was refused, and writes nothing.

use std::time::Duration;

use exactly::Error;
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::copy_check::{keyed_inputs, verify_copy};
use exactly_integration_tests::kafka::Credentials;
use exactly_integration_tests::recorder::{Recorder, create_effects_table, effect_counts};
use exactly_integration_tests::support::{run_until_it_stops, secure_builder, wait_for_committed};
use exactly_integration_tests::{Isolation, Kafka, Postgres, produce, read_to_end, unique, wait_until};
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(180);
/// How soon a refused operation must stop the runtime.
const FAIL_FAST: Duration = Duration::from_secs(30);
/// The relay's positions topic (its default name), created by the admin as the chapter says.
const POSITIONS_TOPIC: &str = "exactly-outbox-positions";

/// One ACL-enforcing broker for this file's tests.
async fn broker() -> anyhow::Result<&'static Kafka> {
    static BROKER: OnceCell<Kafka> = OnceCell::const_new();
    BROKER
        .get_or_try_init(|| async {
            let kafka = Kafka::authorizing().await?;
            create_positions_topic(&kafka).await?;
            anyhow::Ok(kafka)
        })
        .await
}

/// The relay's positions topic: one partition, compacted (as the admin).
async fn create_positions_topic(kafka: &Kafka) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = kafka.client_config().create()?;
    let topic = NewTopic::new(POSITIONS_TOPIC, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for outcome in admin.create_topics([&topic], &AdminOptions::new()).await? {
        outcome.map_err(|(name, code)| anyhow::anyhow!("cannot create {name}: {code}"))?;
    }
    Ok(())
}

fn principal(user: &Credentials) -> String {
    format!("User:{}", user.username)
}

/// What a Kafka-mode copier needs: its topics, group, transactional id and user.
struct KafkaModeService {
    user: Credentials,
    input: String,
    output: String,
    group: String,
    transactional_id: String,
    records: Vec<exactly_integration_tests::Input>,
}

impl KafkaModeService {
    /// A new user, with input and output topics (as the admin) and `count` inputs, granted
    /// the `handler` and `kafka-mode` ACLs by the chapter's script.
    async fn granted(kafka: &Kafka, count: usize) -> anyhow::Result<Self> {
        let user = kafka.add_scram_user(&unique("svc")).await?;
        let (input, output) = (kafka.unique_topic("in", 3).await?, kafka.unique_topic("out", 3).await?);
        let records = keyed_inputs(count, 12);
        produce(&kafka.client_config(), &input, records.clone()).await?;
        let service =
            KafkaModeService { user, input, output, group: unique("copy"), transactional_id: unique("tx"), records };
        kafka
            .grant_documented_acls(
                &principal(&service.user),
                &["handler", "kafka-mode"],
                &[
                    ("INPUT_TOPICS", &service.input),
                    ("GROUP", &service.group),
                    ("OUTPUT_TOPICS", &service.output),
                    ("TRANSACTIONAL_ID", &service.transactional_id),
                ],
            )
            .await?;
        Ok(service)
    }

    fn runtime(&self, kafka: &Kafka) -> anyhow::Result<exactly::RuntimeBuilder> {
        Ok(secure_builder(kafka, &self.user)?.transactional_id(&self.transactional_id).handler(Copier::new(
            &self.input,
            &self.output,
            &self.group,
        )))
    }
}

/// Records on `topic` that a `read_committed` reader sees.
async fn committed(kafka: &Kafka, topic: &str) -> anyhow::Result<usize> {
    Ok(read_to_end(kafka.client_config(), topic, Isolation::ReadCommitted, WAIT).await?.len())
}

/// Asserts that `outcome` is a refused authorization whose message names `resource`.
fn assert_refused(outcome: &exactly::Result<()>, took: Duration, resource: &str) {
    match outcome {
        Err(error @ Error::KafkaAuthorization { .. }) => {
            let text = error.to_string();
            assert!(text.contains(resource), "the error does not name {resource}: {text}");
            assert_eq!(error.class(), exactly::ErrorClass::Fatal, "{text}");
            assert!(took < FAIL_FAST, "stopped only after {took:?}");
        }
        other => panic!("expected Error::KafkaAuthorization naming {resource} within {FAIL_FAST:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mode_copies_exactly_once_under_the_documented_acls() -> anyhow::Result<()> {
    let kafka = broker().await?;
    let service = KafkaModeService::granted(kafka, 600).await?;

    let runtime = service.runtime(kafka)?.build().await?;
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run_until(std::future::pending()));
    wait_for_committed(kafka, &service.output, 600, WAIT).await?;
    shutdown.shutdown();
    run.await??;

    let verdict = verify_copy(kafka, &service.output, &service.records).await?;
    verdict.assert_exactly_once(600);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mode_without_any_one_documented_acl_stops_with_an_error_naming_it() -> anyhow::Result<()> {
    let kafka = broker().await?;
    // Each documented ACL, removed in turn from a fully granted user: (what to remove,
    // what the error must name).
    type Removal = fn(&KafkaModeService) -> (Vec<String>, String);
    let removals: [(&str, Removal); 4] = [
        ("Read on the group", |s| (acl(&["--operation", "Read", "--group", &s.group]), s.group.clone())),
        ("Read on the input topic", |s| (acl(&["--operation", "Read", "--topic", &s.input]), s.input.clone())),
        ("Write on the output topic", |s| (acl(&["--operation", "Write", "--topic", &s.output]), s.output.clone())),
        ("Write on the transactional id", |s| {
            let removed = acl(&[
                "--operation",
                "Write",
                "--transactional-id",
                &s.transactional_id,
                "--resource-pattern-type",
                "prefixed",
            ]);
            (removed, "transactional id".to_owned())
        }),
    ];
    for (what, removal) in removals {
        let service = KafkaModeService::granted(kafka, 50).await?;
        let (removed, named) = removal(&service);
        let removed: Vec<&str> = removed.iter().map(String::as_str).collect();
        kafka.remove_acl(&principal(&service.user), &removed).await?;
        let (outcome, took) = run_until_it_stops(service.runtime(kafka)?, FAIL_FAST).await;
        eprintln!("without {what}: {outcome:?} after {took:?}");
        assert_refused(&outcome, took, &named);
        assert_eq!(committed(kafka, &service.output).await?, 0, "output written without {what}");
    }
    Ok(())
}

fn acl(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

/// What a Database-mode handler with the outbox relay needs.
struct OutboxService {
    user: Credentials,
    input: String,
    output: String,
    group: String,
    relay: String,
    inputs: Vec<exactly_integration_tests::Input>,
}

impl OutboxService {
    async fn granted(kafka: &Kafka, count: usize) -> anyhow::Result<Self> {
        let user = kafka.add_scram_user(&unique("svc")).await?;
        let (input, output) = (kafka.unique_topic("in", 3).await?, kafka.unique_topic("out", 3).await?);
        let inputs = keyed_inputs(count, 10);
        produce(&kafka.client_config(), &input, inputs.clone()).await?;
        let service = OutboxService { user, input, output, group: unique("g"), relay: unique("relay"), inputs };
        kafka
            .grant_documented_acls(
                &principal(&service.user),
                &["handler", "relay"],
                &[
                    ("INPUT_TOPICS", &service.input),
                    ("GROUP", &service.group),
                    ("RELAY", &service.relay),
                    ("RELAY_TOPICS", &service.output),
                ],
            )
            .await?;
        Ok(service)
    }

    fn runtime(&self, kafka: &Kafka, database_url: &str) -> anyhow::Result<exactly::RuntimeBuilder> {
        let mut recorder = Recorder::new(&self.input, &self.group, "a");
        recorder.emit_to = Some(self.output.clone());
        Ok(secure_builder(kafka, &self.user)?.database_url(database_url).outbox_relay(&self.relay).handler(recorder))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_mode_and_the_outbox_relay_run_exactly_once_under_the_documented_acls() -> anyhow::Result<()> {
    let kafka = broker().await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let service = OutboxService::granted(kafka, 300).await?;

    let runtime = service.runtime(kafka, &database.url)?.build().await?;
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run_until(std::future::pending()));
    wait_for_committed(kafka, &service.output, 300, WAIT).await?;
    wait_until(WAIT, "the outbox to be emptied", || async {
        Ok((exactly::outbox::backlog(&pool).await? == 0).then_some(()))
    })
    .await?;
    shutdown.shutdown();
    run.await??;

    assert_eq!(effect_counts(&pool, &service.group).await?, (300, 300));
    let verdict = verify_copy(kafka, &service.output, &service.inputs).await?;
    verdict.assert_exactly_once(300);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_its_transactional_id_acl_stops_with_an_error_naming_it() -> anyhow::Result<()> {
    let kafka = broker().await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let service = OutboxService::granted(kafka, 20).await?;
    kafka
        .remove_acl(&principal(&service.user), &["--operation", "Write", "--transactional-id", &service.relay])
        .await?;

    let (outcome, took) = run_until_it_stops(service.runtime(kafka, &database.url)?, FAIL_FAST).await;
    assert_refused(&outcome, took, "transactional id");
    assert_eq!(committed(kafka, &service.output).await?, 0, "the relay wrote without its transactional id");
    // Whatever the handler committed stays in the outbox for the relay's next start.
    let handled = effect_counts(&pool, &service.group).await?.0;
    assert_eq!(exactly::outbox::backlog(&pool).await?, handled, "outbox records lost");

    // Run on its own, the relay ends by itself with the same error, for `ended` to return.
    let mut relay = exactly::outbox::Relay::new(&service.relay, kafka.bootstrap_servers(), pool.clone());
    for (key, value) in kafka.client_settings(&service.user)? {
        relay = relay.kafka_setting(key, value);
    }
    let started = std::time::Instant::now();
    let mut handle = relay.start().await?;
    let ended = tokio::time::timeout(FAIL_FAST, handle.ended()).await;
    let outcome = match ended {
        Ok(outcome) => outcome,
        Err(_) => Err(exactly::Error::Config(format!("the relay was still running after {FAIL_FAST:?}"))),
    };
    assert_refused(&outcome, started.elapsed(), "transactional id");
    handle.stop().await?;
    assert_eq!(exactly::outbox::backlog(&pool).await?, handled, "outbox records lost");
    Ok(())
}
