//! One container the harness started, and the faults a test can inflict on it.

use std::sync::Arc;

use anyhow::Context;
use testcontainers::bollard::query_parameters::KillContainerOptionsBuilder;
use testcontainers::core::{ContainerPort, ExecCommand, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, CopyTargetOptions, GenericImage, ImageExt};

use crate::engine::{self, HARNESS_LABEL, OWNER_PID_LABEL, on_harness};
use crate::images::ImageRef;

/// What to start: image, name, network, environment, fixed port mappings, command.
#[derive(Debug, Clone)]
pub(crate) struct NodeSpec {
    pub(crate) image: ImageRef,
    pub(crate) name: String,
    pub(crate) network: Option<String>,
    pub(crate) env: Vec<(String, String)>,
    /// (host port, container port); fixed so a restarted container keeps its address.
    pub(crate) ports: Vec<(u16, u16)>,
    pub(crate) cmd: Vec<String>,
    /// Files copied in before the container starts: (path, content, mode).
    pub(crate) files: Vec<(String, Vec<u8>, u32)>,
    /// Memory-backed volumes of a fixed size: (path, bytes), writable by every user.
    pub(crate) tmpfs: Vec<(String, i64)>,
}

/// A running (or stopped, killed, paused) container; removed when dropped.
#[derive(Debug)]
pub struct Node {
    name: String,
    container: Option<Arc<ContainerAsync<GenericImage>>>,
}

impl Node {
    pub(crate) async fn start(spec: NodeSpec) -> anyhow::Result<Self> {
        engine::ensure_engine().await?;
        let name = spec.name.clone();
        let container = on_harness(async move {
            let image =
                GenericImage::new(spec.image.name.clone(), spec.image.tag.clone()).with_wait_for(WaitFor::Nothing);
            let mut request = image
                .with_container_name(spec.name.clone())
                .with_label(HARNESS_LABEL, "1")
                .with_label(OWNER_PID_LABEL, std::process::id().to_string());
            if let Some(network) = &spec.network {
                request = request.with_network(network.clone());
            }
            for (key, value) in &spec.env {
                request = request.with_env_var(key.clone(), value.clone());
            }
            for (host, container) in &spec.ports {
                request = request.with_mapped_port(*host, ContainerPort::Tcp(*container));
            }
            if !spec.cmd.is_empty() {
                request = request.with_cmd(spec.cmd.clone());
            }
            for (path, bytes) in &spec.tmpfs {
                request =
                    request.with_mount(Mount::tmpfs_mount(path.clone()).with_size_bytes(*bytes).with_mode(0o1777));
            }
            for (path, content, mode) in &spec.files {
                request = request.with_copy_to(CopyTargetOptions::new(path.clone()).with_mode(*mode), content.clone());
            }
            request
                .start()
                .await
                .with_context(|| format!("cannot start container {} from image {}", spec.name, spec.image))
        })
        .await?;
        Ok(Self { name, container: Some(Arc::new(container)) })
    }

    /// The container's name, which is also its host name on the test network.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's id, while it exists.
    pub fn container_id(&self) -> Option<String> {
        self.container.as_ref().map(|container| container.id().to_owned())
    }

    pub(crate) fn container(&self) -> anyhow::Result<Arc<ContainerAsync<GenericImage>>> {
        self.container.clone().context("container already removed")
    }

    /// Sends SIGKILL: a hard crash, nothing flushed.
    pub async fn kill(&self) -> anyhow::Result<()> {
        let id = self.container()?.id().to_owned();
        on_harness(async move {
            let docker = engine::docker().await?;
            let options = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
            docker.kill_container(&id, Some(options)).await.context("docker kill failed")
        })
        .await
    }

    /// Sends SIGTERM and waits up to `grace_seconds` before SIGKILL: a clean shutdown.
    pub async fn stop(&self, grace_seconds: i32) -> anyhow::Result<()> {
        let container = self.container()?;
        on_harness(async move { container.stop_with_timeout(Some(grace_seconds)).await })
            .await
            .context("docker stop failed")
    }

    /// Starts a stopped or killed container again, with its data and ports.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let container = self.container()?;
        on_harness(async move { container.start().await }).await.context("docker start failed")
    }

    /// Freezes every process of the container (it stops answering but keeps its sockets).
    pub async fn pause(&self) -> anyhow::Result<()> {
        let container = self.container()?;
        on_harness(async move { container.pause().await }).await.context("docker pause failed")
    }

    /// Thaws a paused container.
    pub async fn unpause(&self) -> anyhow::Result<()> {
        let container = self.container()?;
        on_harness(async move { container.unpause().await }).await.context("docker unpause failed")
    }

    /// Whether the container's main process still runs (false once it exited or was killed).
    pub async fn is_running(&self) -> bool {
        let Ok(container) = self.container() else { return false };
        on_harness(async move { container.is_running().await }).await.unwrap_or_else(|e| {
            eprintln!("is_running: {e:?}");
            false
        })
    }

    /// Fails fast, with the container's output, when it exited while a test waits for it.
    pub(crate) async fn ensure_running(&self) -> anyhow::Result<()> {
        if self.is_running().await {
            return Ok(());
        }
        let logs = self.logs().await;
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!("container {} exited; its last lines:\n{}", self.name, tail.join("\n"))
    }

    /// Runs bash `script` in the container with `env` (kept off the command line, so secrets
    /// stay out of `ps`); returns its exit status and its output, stdout then stderr.
    pub async fn exec(&self, script: &str, env: &[(&str, &str)]) -> anyhow::Result<(i64, String)> {
        const STATUS: &str = "exactly-harness-exit-status=";
        let container = self.container()?;
        // The status is printed last: reading it from the exec needs a future that is not Send.
        let wrapped = format!("{script}\nprintf '\\n{STATUS}%s\\n' \"$?\"");
        let command = ExecCommand::new(["bash", "-c", wrapped.as_str()])
            .with_env_vars(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let (out, err) = on_harness(async move {
            let mut result = container.exec(command).await.context("docker exec failed")?;
            let out = result.stdout_to_vec().await.unwrap_or_default();
            let err = result.stderr_to_vec().await.unwrap_or_default();
            anyhow::Ok((String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned()))
        })
        .await?;
        let (output, status) = out.rsplit_once(STATUS).unwrap_or((out.as_str(), "-1"));
        Ok((status.trim().parse().unwrap_or(-1), format!("{output}{err}")))
    }

    /// Everything the container printed so far, stdout then stderr, for failure messages.
    pub async fn logs(&self) -> String {
        let Ok(container) = self.container() else { return String::new() };
        on_harness(async move {
            let out = container.stdout_to_vec().await.unwrap_or_default();
            let err = container.stderr_to_vec().await.unwrap_or_default();
            format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err))
        })
        .await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            // testcontainers removes the container in its own Drop, which needs a runtime.
            engine::block_on_harness(async move { drop(container) });
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}
