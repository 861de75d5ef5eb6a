//! Which images the harness runs.
//!
//! In order: the image an environment variable names; the official image if the engine has
//! it; the local drop-in `scripts/setup` builds where no registry answers; else the official
//! image, which the engine pulls.

use testcontainers::bollard::Docker;

/// Environment variable naming the Kafka image (`name:tag`).
pub const KAFKA_IMAGE_VAR: &str = "EXACTLY_KAFKA_IMAGE";
/// Environment variable naming the PostgreSQL image (`name:tag`).
pub const POSTGRES_IMAGE_VAR: &str = "EXACTLY_POSTGRES_IMAGE";
/// The official Kafka image (KRaft, configured from `KAFKA_*` variables).
pub const KAFKA_OFFICIAL: &str = "apache/kafka:4.1.1";
/// The drop-in built by `scripts/setup` from Maven Central jars.
pub const KAFKA_LOCAL: &str = "exactly-local/kafka:4.1.1";
/// The official PostgreSQL image.
pub const POSTGRES_OFFICIAL: &str = "postgres:15";
/// The drop-in built by `scripts/setup` from Debian's PostgreSQL 15.
pub const POSTGRES_LOCAL: &str = "exactly-local/postgres:15";

/// Environment variable naming the PgBouncer image (`name:tag`).
pub const PGBOUNCER_IMAGE_VAR: &str = "EXACTLY_PGBOUNCER_IMAGE";
/// The PgBouncer image `scripts/setup` builds from Debian's package (there is no official
/// one).
pub const PGBOUNCER_LOCAL: &str = "exactly-local/pgbouncer:1.18";

/// The PgBouncer image: the one `EXACTLY_PGBOUNCER_IMAGE` names, else the local one.
pub fn pgbouncer() -> ImageRef {
    match std::env::var(PGBOUNCER_IMAGE_VAR) {
        Ok(named) if !named.trim().is_empty() => ImageRef::parse(named.trim()),
        _ => ImageRef::parse(PGBOUNCER_LOCAL),
    }
}

/// An image reference split into name and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Repository, e.g. `apache/kafka`.
    pub name: String,
    /// Tag, e.g. `4.1.1`.
    pub tag: String,
}

impl ImageRef {
    /// Splits `name:tag` (the tag defaults to `latest`).
    pub fn parse(reference: &str) -> Self {
        match reference.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => Self { name: name.into(), tag: tag.into() },
            _ => Self { name: reference.into(), tag: "latest".into() },
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// Chooses among `var`, `official` and `local`; call on the harness runtime.
pub(crate) async fn resolve(docker: &Docker, var: &str, official: &str, local: &str) -> ImageRef {
    if let Ok(named) = std::env::var(var)
        && !named.trim().is_empty()
    {
        return ImageRef::parse(named.trim());
    }
    for candidate in [official, local] {
        if docker.inspect_image(candidate).await.is_ok() {
            return ImageRef::parse(candidate);
        }
    }
    ImageRef::parse(official)
}

/// The Kafka and PostgreSQL images the harness would start now.
pub async fn chosen() -> anyhow::Result<(ImageRef, ImageRef)> {
    crate::engine::on_harness(async {
        let docker = crate::engine::docker().await?;
        let kafka = resolve(&docker, KAFKA_IMAGE_VAR, KAFKA_OFFICIAL, KAFKA_LOCAL).await;
        let postgres = resolve(&docker, POSTGRES_IMAGE_VAR, POSTGRES_OFFICIAL, POSTGRES_LOCAL).await;
        anyhow::Ok((kafka, postgres))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::ImageRef;

    #[test]
    fn splits_name_and_tag() {
        let image = ImageRef::parse("localhost:5000/apache/kafka:4.1.1");
        assert_eq!(image.name, "localhost:5000/apache/kafka");
        assert_eq!(image.tag, "4.1.1");
        assert_eq!(ImageRef::parse("postgres").tag, "latest");
    }
}
