//! PostgreSQL restarted (killed with SIGKILL, then started) under a sqlx pool: the pool
//! recovers by itself and no committed row is lost. Paused, it stops answering; unpaused,
//! it answers again.

use std::time::Duration;

use exactly_integration_tests::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_and_committed_rows_survive_a_crash() -> anyhow::Result<()> {
    let server = Postgres::dedicated().await?;
    let database = server.database().await?;
    let pool = database.pool().await?;
    sqlx::query("CREATE TABLE smoke (id BIGINT PRIMARY KEY)").execute(&pool).await?;

    let started_at = "SELECT pg_postmaster_start_time()::text";
    let first_start: String = sqlx::query_scalar(started_at).fetch_one(&pool).await?;
    let mut committed = Vec::new();
    for id in 0_i64..400 {
        if id == 200 {
            server.node().kill().await?;
            server.node().start_again().await?;
        }
        // Retry each insert until it commits: the pool must hand out working connections again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match sqlx::query("INSERT INTO smoke (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
                .bind(id)
                .execute(&pool)
                .await
            {
                Ok(_) => {
                    committed.push(id);
                    break;
                }
                Err(e) => {
                    assert!(attempts < 300, "the pool did not recover: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    let rows: Vec<i64> = sqlx::query_scalar("SELECT id FROM smoke ORDER BY id").fetch_all(&pool).await?;
    for id in &committed {
        assert!(rows.binary_search(id).is_ok(), "row {id} was committed and then lost");
    }
    assert_eq!(rows, (0..400).collect::<Vec<_>>(), "every id must be there exactly once");
    // The pool may hide the crash (it tests a connection before handing it out), so check
    // that the server really went down and came back, rather than that a statement failed.
    let second_start: String = sqlx::query_scalar(started_at).fetch_one(&pool).await?;
    assert_ne!(first_start, second_start, "the server was not restarted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_stops_answering_until_unpaused() -> anyhow::Result<()> {
    let server = Postgres::dedicated().await?;
    let database = server.database().await?;
    let pool = database.pool().await?;
    sqlx::query("CREATE TABLE smoke (id BIGINT PRIMARY KEY)").execute(&pool).await?;
    sqlx::query("INSERT INTO smoke VALUES (1)").execute(&pool).await?;

    server.node().pause().await?;
    let frozen = tokio::time::timeout(Duration::from_secs(3), sqlx::query("SELECT 1").execute(&pool)).await;
    assert!(frozen.is_err(), "a paused server answered");
    server.node().unpause().await?;

    let count: i64 = tokio::time::timeout(
        Duration::from_secs(30),
        sqlx::query_scalar("SELECT count(*) FROM smoke").fetch_one(&pool),
    )
    .await??;
    assert_eq!(count, 1);
    Ok(())
}
