//! The Docker engine the containers run on, and the runtime that talks to it.
//!
//! Every Docker call of the harness runs on one process-wide tokio runtime, so containers
//! shared by the tests of a binary outlive each test's own runtime without their client
//! connections dying with it.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context, anyhow};
use testcontainers::bollard::Docker;
use testcontainers::bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptions, RemoveContainerOptionsBuilder,
};
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;

/// Label put on every container the harness starts.
pub const HARNESS_LABEL: &str = "exactly.harness";
/// Label holding the pid of the test process that owns a container.
pub const OWNER_PID_LABEL: &str = "exactly.harness.pid";

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("exactly-harness")
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build the harness runtime: {e}"))
});

/// Runs `future` on the harness runtime and waits for it from any runtime.
pub async fn on_harness<F, T>(future: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match RUNTIME.spawn(future).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs `future` on the harness runtime from synchronous code (e.g. `Drop`), blocking.
pub(crate) fn block_on_harness<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    RUNTIME.spawn(async move {
        future.await;
        let _ = tx.send(());
    });
    let _ = rx.recv();
}

static ENGINE: OnceCell<Result<(), String>> = OnceCell::const_new();

/// Where the harness looks for the engine, for messages.
fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned())
}

/// The sentence a developer sees when no engine answers.
pub fn no_engine_message(cause: &str) -> String {
    format!(
        "no Docker engine answered at {endpoint} ({cause}).\n\
         The container tests need one: they run real Apache Kafka and PostgreSQL.\n\
         Start it with `scripts/setup` from the repository root (as root on Debian it installs \
         docker.io, starts dockerd and builds the images), or start Docker yourself \
         (`sudo systemctl start docker`, Docker Desktop) and point DOCKER_HOST at it.",
        endpoint = endpoint()
    )
}

/// Checks once per process that an engine answers; removes containers left behind by
/// test processes that died.
///
/// # Errors
/// Fails with [`no_engine_message`] when no engine answers.
pub async fn ensure_engine() -> anyhow::Result<()> {
    let outcome =
        ENGINE.get_or_init(|| on_harness(async { check_and_reap().await.map_err(|e| format!("{e:#}")) })).await;
    outcome.clone().map_err(|e| anyhow!(e))
}

async fn check_and_reap() -> anyhow::Result<()> {
    let docker = docker().await.map_err(|e| anyhow!(no_engine_message(&format!("{e:#}"))))?;
    match tokio::time::timeout(Duration::from_secs(10), docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(anyhow!(no_engine_message(&e.to_string()))),
        Err(_) => return Err(anyhow!(no_engine_message("no answer within 10 s"))),
    }
    reap_orphans(&docker).await
}

/// The Docker client; call only on the harness runtime (see [`on_harness`]).
pub async fn docker() -> anyhow::Result<Docker> {
    testcontainers::core::client::docker_client_instance().await.context("cannot create a Docker client")
}

/// Removes harness containers whose owning test process is gone (killed, crashed).
async fn reap_orphans(docker: &Docker) -> anyhow::Result<()> {
    let filters = std::collections::HashMap::from([("label", vec![OWNER_PID_LABEL])]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    let containers = docker.list_containers(Some(options)).await?;
    for container in containers {
        let owner = container
            .labels
            .as_ref()
            .and_then(|labels| labels.get(OWNER_PID_LABEL))
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = owner.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive && let Some(id) = container.id {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&id, Some(options)).await;
        }
    }
    // Networks of dead Kafka clusters and poolers; one still in use refuses removal, which is fine.
    for network in docker.list_networks(None::<ListNetworksOptions>).await? {
        if let Some(name) = network.name
            && is_harness_network(&name)
        {
            let _ = docker.remove_network(&name).await;
        }
    }
    Ok(())
}

/// Names of the networks [`crate::Kafka`] and [`crate::PgBouncer`] create:
/// `kafka_<32 hex digits>_net`, `pgbouncer_<32 hex digits>_net`.
pub(crate) fn is_harness_network(name: &str) -> bool {
    ["kafka_", "pgbouncer_"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .and_then(|rest| rest.strip_suffix("_net"))
        .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}
