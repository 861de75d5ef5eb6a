//! Network partitions: a container cut off from everything, or from some of its peers,
//! while every side stays up and nothing passes between them (packets dropped, not
//! refused, as when a link or a switch fails).
//!
//! The rules are iptables rules in the container's own network namespace, entered from the
//! host with `nsenter`: the image needs no iptables and the container no capability, but
//! the test must run as root on the machine whose Docker engine runs the container (as
//! `scripts/test` does), with iptables installed (Debian's `docker.io` depends on it).

use anyhow::Context as _;
use testcontainers::bollard::query_parameters::InspectContainerOptions;

use crate::Node;
use crate::engine::{self, on_harness};

impl Node {
    /// Drops every packet to and from the container but its own loopback: clients, peers and
    /// the host all lose it until [`Node::heal`].
    ///
    /// # Errors
    /// When the rules cannot be added (not root, no `nsenter` or `iptables`, the container
    /// not running).
    pub async fn cut_off(&self) -> anyhow::Result<()> {
        self.firewall(&["-I INPUT ! -i lo -j DROP".to_owned(), "-I OUTPUT ! -o lo -j DROP".to_owned()]).await
    }

    /// Drops every packet between the container and `peers`, both ways; everything else
    /// (clients on the host included) still reaches it, until [`Node::heal`].
    ///
    /// # Errors
    /// As [`Node::cut_off`].
    pub async fn partition_from(&self, peers: &[&Node]) -> anyhow::Result<()> {
        let mut rules = Vec::new();
        for peer in peers {
            for address in peer.addresses().await? {
                rules.push(format!("-I INPUT -s {address} -j DROP"));
                rules.push(format!("-I OUTPUT -d {address} -j DROP"));
            }
        }
        anyhow::ensure!(!rules.is_empty(), "no address of the peers of {} to cut it from", self.name());
        self.firewall(&rules).await
    }

    /// Removes what [`Node::cut_off`] and [`Node::partition_from`] added: packets pass again.
    ///
    /// # Errors
    /// As [`Node::cut_off`].
    pub async fn heal(&self) -> anyhow::Result<()> {
        self.firewall(&["-F INPUT".to_owned(), "-F OUTPUT".to_owned()]).await
    }

    /// The process id of the container's main process, on the host.
    async fn host_pid(&self) -> anyhow::Result<i64> {
        let inspected = self.inspect().await?;
        inspected
            .state
            .and_then(|state| state.pid)
            .filter(|pid| *pid > 0)
            .with_context(|| format!("container {} has no running process to enter", self.name()))
    }

    /// The container's addresses on its networks.
    async fn addresses(&self) -> anyhow::Result<Vec<String>> {
        let inspected = self.inspect().await?;
        let networks = inspected.network_settings.and_then(|settings| settings.networks).unwrap_or_default();
        Ok(networks.into_values().filter_map(|network| network.ip_address).filter(|ip| !ip.is_empty()).collect())
    }

    async fn inspect(&self) -> anyhow::Result<testcontainers::bollard::models::ContainerInspectResponse> {
        let id = self.container()?.id().to_owned();
        on_harness(async move {
            let docker = engine::docker().await?;
            docker.inspect_container(&id, None::<InspectContainerOptions>).await.context("docker inspect failed")
        })
        .await
    }

    /// Applies iptables `rules` (each one command line, split at spaces) in the container's
    /// network namespace.
    async fn firewall(&self, rules: &[String]) -> anyhow::Result<()> {
        let pid = self.host_pid().await?.to_string();
        for rule in rules {
            let output = tokio::process::Command::new("nsenter")
                .args(["-t", pid.as_str(), "-n", "iptables"])
                .args(rule.split(' '))
                .output()
                .await
                .context("cannot run nsenter (the partition tests need root and util-linux)")?;
            anyhow::ensure!(
                output.status.success(),
                "iptables {rule} in the network namespace of {} failed: {}",
                self.name(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}
