//! 10 000 messages of which 1% are poison (50 undecodable, 50 always refused), processed by
//! a worker process that is killed with SIGKILL in the middle: exactly 9 900 effects and
//! exactly 100 dead letters, none duplicated.

use std::process::Child;
use std::time::Duration;

use exactly_integration_tests::recorder::{create_effects_table, effect_counts};
use exactly_integration_tests::support::{signal, spawn_logged};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};

const WAIT: Duration = Duration::from_secs(240);
const PARTITIONS: i32 = 4;

fn spawn(kafka: &Kafka, url: &str, topic: &str, group: &str, log: &std::path::Path) -> anyhow::Result<Child> {
    spawn_logged(env!("CARGO_BIN_EXE_recorder-worker"), &[&kafka.bootstrap_servers(), url, topic, group], &[], log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_poison_with_a_sigkill_gives_9900_effects_and_100_dead_letters() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("poison", PARTITIONS).await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    exactly::migrate(&pool).await?;
    let records: Vec<Input> = (0..10_000)
        .map(|i| {
            let partition = i % PARTITIONS;
            let payload = match i % 100 {
                17 if i % 200 == 17 => vec![0xc3, 0x28, 0xa0], // not UTF-8: 50 of these
                17 => format!("fail-{i}").into_bytes(),        // refused every time: 50 of these
                _ => format!("m-{i}").into_bytes(),
            };
            Input::to(partition, format!("k{}", i % 64), payload)
        })
        .collect();
    produce(&kafka.client_config(), &topic, records).await?;

    let group = unique("poison");
    let log = std::env::temp_dir().join(format!("{group}.log"));
    let mut worker = spawn(kafka, &database.url, &topic, &group, &log)?;
    wait_until(WAIT, "about half of the effects", || async {
        Ok((effect_counts(&pool, &group).await?.0 >= 4_000).then_some(()))
    })
    .await?;
    worker.kill()?; // SIGKILL in the middle
    worker.wait()?;
    let mut worker = spawn(kafka, &database.url, &topic, &group, &log)?;
    let done = wait_until(WAIT, "every partition at its end", || async {
        let mut ends = 0;
        for partition in 0..PARTITIONS {
            if exactly::offsets::position(&pool, &group, &topic, partition).await? == Some(2_500) {
                ends += 1;
            }
        }
        Ok((ends == PARTITIONS).then_some(()))
    })
    .await;
    signal(&worker, "TERM")?;
    worker.wait()?;
    done.map_err(|e| anyhow::anyhow!("{e:#}\nworker output in {}", log.display()))?;

    assert_eq!(effect_counts(&pool, &group).await?, (9_900, 9_900), "effects lost or doubled");
    let (dead, distinct, undecodable): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (partition, message_offset)), count(*) FILTER (WHERE error LIKE 'cannot decode%')
           FROM exactly.dead_letters WHERE group_id = $1",
    )
    .bind(&group)
    .fetch_one(&pool)
    .await?;
    assert_eq!((dead, distinct, undecodable), (100, 100, 50), "dead letters lost or doubled");
    let poisoned_effects: i64 =
        sqlx::query_scalar("SELECT count(*) FROM effects WHERE group_id = $1 AND payload LIKE 'fail-%'")
            .bind(&group)
            .fetch_one(&pool)
            .await?;
    assert_eq!(poisoned_effects, 0, "a refused message left effects");
    Ok(())
}
