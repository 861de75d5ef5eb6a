//! 10 000 messages of which 1% are poison (50 undecodable, 50 always refused), processed by
//! a worker process that is killed with SIGKILL in the middle: exactly 9 900 effects and
//! exactly 100 dead letters, none duplicated, each key's effects in offset order. Run with
//! strict partition order and with key-level parking.

use std::process::Child;
use std::time::Duration;

use exactly_integration_tests::recorder::{create_effects_table, effect_counts};
use exactly_integration_tests::support::{signal, spawn_logged};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};

const WAIT: Duration = Duration::from_secs(240);
const PARTITIONS: i32 = 4;

struct Worker<'a> {
    kafka: &'a Kafka,
    url: &'a str,
    topic: &'a str,
    group: &'a str,
    log: &'a std::path::Path,
    parking: bool,
}

impl Worker<'_> {
    fn spawn(&self) -> anyhow::Result<Child> {
        let parking = if self.parking { "1" } else { "0" };
        spawn_logged(
            env!("CARGO_BIN_EXE_recorder-worker"),
            &[&self.kafka.bootstrap_servers(), self.url, self.topic, self.group],
            &[("EXACTLY_TEST_KEY_PARKING", parking)],
            self.log,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_poison_with_a_sigkill_gives_9900_effects_and_100_dead_letters() -> anyhow::Result<()> {
    poison_with_a_sigkill(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_key_parking() -> anyhow::Result<()> {
    poison_with_a_sigkill(true).await
}

async fn poison_with_a_sigkill(parking: bool) -> anyhow::Result<()> {
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
    let worker = Worker { kafka, url: &database.url, topic: &topic, group: &group, log: &log, parking };
    let mut process = worker.spawn()?;
    wait_until(WAIT, "about half of the effects", || async {
        Ok((effect_counts(&pool, &group).await?.0 >= 4_000).then_some(()))
    })
    .await?;
    process.kill()?; // SIGKILL in the middle
    process.wait()?;
    let process = worker.spawn()?;
    let done = wait_until(WAIT, "every partition at its end, nothing parked", || async {
        let mut ends = 0;
        for partition in 0..PARTITIONS {
            if exactly::offsets::position(&pool, &group, &topic, partition).await? == Some(2_500) {
                ends += 1;
            }
        }
        let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM exactly.parked WHERE group_id = $1")
            .bind(&group)
            .fetch_one(&pool)
            .await?;
        Ok((ends == PARTITIONS && parked == 0).then_some(()))
    })
    .await;
    signal(&process, "TERM")?;
    let mut process = process;
    process.wait()?;
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
    let applied: Vec<(i32, String, i64)> =
        sqlx::query_as("SELECT partition, key, message_offset FROM effects WHERE group_id = $1 ORDER BY seq")
            .bind(&group)
            .fetch_all(&pool)
            .await?;
    let (mut by_key, mut by_partition) = (std::collections::HashMap::new(), std::collections::HashMap::new());
    let mut overtaken = 0;
    for (partition, key, offset) in applied {
        if let Some(previous) = by_key.insert(key.clone(), offset) {
            assert!(previous < offset, "key {key}: offset {offset} applied after {previous}");
        }
        if by_partition.insert(partition, offset).is_some_and(|previous| previous > offset) {
            overtaken += 1;
        }
    }
    if parking {
        assert!(overtaken > 0, "with parking, other keys should have gone past the parked ones");
    } else {
        assert_eq!(overtaken, 0, "without parking, each partition keeps its order");
    }
    Ok(())
}
