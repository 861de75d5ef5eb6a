//! The command line: commands, their arguments and the connection settings they share.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate exactly's consumer groups: positions, lag, outbox, dead letters, transactions.
#[derive(Debug, Parser)]
#[command(name = "exactly", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Where PostgreSQL and Kafka are.
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Connection settings, from flags or the environment.
#[derive(Clone, Args)]
pub(crate) struct Connection {
    /// PostgreSQL URL of the database that holds exactly's tables.
    #[arg(long, env = "EXACTLY_DATABASE_URL", global = true, hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, env = "EXACTLY_BROKERS", global = true)]
    pub(crate) brokers: Option<String>,
    /// A librdkafka setting `key=value` for every Kafka client the tool makes (TLS, SASL,
    /// timeouts); repeat it for several. Settings also come from `EXACTLY_RDKAFKA_<KEY>`
    /// variables (`EXACTLY_RDKAFKA_SASL_PASSWORD` is `sasl.password`); `-X` wins.
    /// Kept raw, checked by [`Connection::kafka_settings`]: clap would repeat a malformed
    /// one, which may hold a secret, in its error.
    #[arg(short = 'X', long = "kafka-setting", global = true)]
    pub(crate) kafka_settings: Vec<String>,
}

impl std::fmt::Debug for Connection {
    /// The database password, secret Kafka settings and settings librdkafka does not know
    /// (a misspelt secret) print as `[redacted]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use exactly::redact::{REDACTED, property_value};
        let settings: Vec<(&str, &str)> = self
            .kafka_settings
            .iter()
            .map(|text| match text.split_once('=') {
                Some((key, value)) => (key, property_value(key, value)),
                None => (REDACTED, ""),
            })
            .collect();
        f.debug_struct("Connection")
            .field("database_url", &self.database_url.as_deref().map(exactly::redact::redact_url))
            .field("brokers", &self.brokers)
            .field("kafka_settings", &settings)
            .finish()
    }
}

impl Connection {
    /// The `-X` settings as `(key, value)`. The error never repeats the text: it may hold a
    /// secret.
    pub(crate) fn kafka_settings(&self) -> Result<Vec<(&str, &str)>, crate::error::Error> {
        self.kafka_settings
            .iter()
            .enumerate()
            .map(|(i, text)| match text.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => Ok((key.trim(), value)),
                _ => Err(crate::error::Error::Usage(format!(
                    "Kafka setting {} (-X) is not `key=value` (its text is not shown: it may hold a secret)",
                    i + 1
                ))),
            })
            .collect()
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create exactly's tables, or upgrade them; safe to run while instances run.
    Migrate,
    /// Show or change where a group stands in each partition.
    #[command(subcommand)]
    Offsets(OffsetsCommand),
    /// How far a group is behind the end (last stable offset) of each partition.
    Lag(LagArgs),
    /// The transactional outbox.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Messages a group could not process.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// Transactions left open on a topic, which stop every read_committed reader.
    #[command(subcommand)]
    Transactions(TransactionsCommand),
}

/// Which store holds a group's positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// PostgreSQL if it holds positions of the group, Kafka otherwise.
    Auto,
    /// `exactly.offsets` in PostgreSQL (Database-mode handlers).
    Database,
    /// The group's committed offsets in Kafka (Kafka-mode handlers).
    Kafka,
}

/// A group, and where to find its positions.
#[derive(Debug, Clone, Args)]
pub(crate) struct GroupArgs {
    /// The consumer group.
    #[arg(long, short)]
    pub(crate) group: String,
    /// Topics to look at (required for a Kafka-mode group: Kafka is asked per topic).
    #[arg(long = "topic", short)]
    pub(crate) topics: Vec<String>,
    /// Where the positions are.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub(crate) mode: Mode,
}

/// `offsets ...`
#[derive(Debug, Subcommand)]
pub(crate) enum OffsetsCommand {
    /// Each partition's position (the next offset to process).
    Show(GroupArgs),
    /// Set one partition's position.
    Set(SetArgs),
    /// Move every partition of a topic (or the ones named) to the earliest or latest
    /// offset, an offset, or the first offset at or after a time.
    Reset(ResetArgs),
}

/// `offsets set`
#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// The group, and the one topic.
    #[command(flatten)]
    pub(crate) group: GroupArgs,
    /// The partition.
    #[arg(long, short)]
    pub(crate) partition: i32,
    /// The new position: the next offset the group will process.
    #[arg(long)]
    pub(crate) offset: i64,
    /// Change it even though the group has live members. Database mode: they are fenced
    /// and stop processing the partition until the next rebalance.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `offsets reset`
#[derive(Debug, Args)]
pub(crate) struct ResetArgs {
    /// The group, and the one topic.
    #[command(flatten)]
    pub(crate) group: GroupArgs,
    /// `earliest`, `latest`, an offset, or a time (`2026-11-26T10:00:00Z`, RFC 3339).
    #[arg(long)]
    pub(crate) to: String,
    /// Only these partitions (default: all of the topic).
    #[arg(long = "partition", short)]
    pub(crate) partitions: Vec<i32>,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Change it even though the group has live members (see `offsets set --force`).
    #[arg(long)]
    pub(crate) force: bool,
}

/// `lag`
#[derive(Debug, Args)]
pub(crate) struct LagArgs {
    /// The group and its topics.
    #[command(flatten)]
    pub(crate) group: GroupArgs,
}

/// `outbox ...`
#[derive(Debug, Subcommand)]
pub(crate) enum OutboxCommand {
    /// Rows waiting to be published: how many, how old, per topic.
    Status,
}

/// `dead-letters ...`
#[derive(Debug, Subcommand)]
pub(crate) enum DeadLettersCommand {
    /// A group's dead letters, oldest first.
    List {
        /// The consumer group.
        #[arg(long, short)]
        group: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only ids above this one (to page on).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// One dead letter in full: key, payload, headers, error.
    Show {
        /// Its id.
        id: i64,
    },
    /// Move dead letters back into processing, exactly once: each is deleted and its
    /// original record written to the outbox in one transaction; the outbox relay
    /// publishes it to its topic and the group consumes it again.
    Replay {
        /// The consumer group.
        #[arg(long, short)]
        group: String,
        /// The dead letters to replay.
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every dead letter of the group.
        #[arg(long)]
        all: bool,
        /// Publish to this topic instead of each one's original topic.
        #[arg(long)]
        to: Option<String>,
    },
}

/// `transactions ...`
#[derive(Debug, Subcommand)]
pub(crate) enum TransactionsCommand {
    /// Ongoing transactions: transactional id, producer, how long open, timeout and
    /// partitions; with topics, only those writing to them, and the topics' partitions
    /// whose last stable offset an open transaction holds back.
    List {
        /// Only transactions writing to these topics (and show their held partitions).
        #[arg(long = "topic", short)]
        topics: Vec<String>,
    },
    /// Fence a transactional id: whatever transaction it left open is aborted, and its
    /// current owner (if any) can no longer commit; an exactly instance rebuilds its
    /// producer and redoes the work from the committed offsets.
    Abort {
        /// The transactional id (for exactly's Kafka mode: the runtime's `transactional_id`,
        /// suffixed with `-{group}` when it runs several Kafka-mode handlers).
        #[arg(long)]
        transactional_id: String,
        /// Wait until no transaction is open on these topics any more.
        #[arg(long = "topic", short)]
        topics: Vec<String>,
        /// How long to wait for that, in seconds.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let cli = Cli::try_parse_from([
            "exactly",
            "--database-url",
            "postgres://app:S3CR3T-DB@db:5432/orders?sslpassword=S3CR3T-Q",
            "-X",
            "sasl.password=S3CR3T-SASL",
            "-X",
            "ssl.key.pem=S3CR3T-PEM",
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.passwd=S3CR3T-MISSPELT",
            "migrate",
        ]);
        let text = format!("{cli:?} {cli:#?}");
        assert!(!text.contains("S3CR3T"), "{text}");
        assert!(text.contains("db:5432/orders") && text.contains("SASL_SSL"), "{text}");
    }

    #[test]
    fn a_malformed_setting_is_not_echoed() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from(["exactly", "-X", "S3CR3T-NO-EQUALS", "migrate"])?;
        let text = cli.connection.kafka_settings().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("key=value"), "{text}");
        assert!(!text.contains("S3CR3T"), "{text}");
        Ok(())
    }
}

/// Properties of the command line over generated arguments: no argument vector panics the
/// parser, numbers parse to themselves in every form clap takes, and no secret given in a
/// setting or the database URL shows in an error or a `Debug`.
#[cfg(test)]
mod properties {
    use clap::CommandFactory as _;
    use proptest::prelude::*;

    use super::*;

    /// Letters that only secrets are made of here: any one of them in an output is a piece
    /// of a secret shown.
    const SECRET_LETTERS: &str = "αβγδεζηθικλμνξοπρστυφχψω";

    fn shows_a_secret(text: &str) -> bool {
        text.chars().any(|c| SECRET_LETTERS.contains(c))
    }

    /// A secret: secret letters and the characters a setting or a URL gives a meaning to.
    fn secret() -> impl Strategy<Value = String> {
        let letter = prop::sample::select(SECRET_LETTERS.chars().collect::<Vec<_>>());
        let special = prop::sample::select("@:/?#%&= ,-".chars().collect::<Vec<_>>());
        (letter.clone(), prop::collection::vec(prop_oneof![letter, special], 0..10)).prop_map(|(first, mut rest)| {
            rest.insert(rest.len() / 2, first);
            rest.into_iter().collect()
        })
    }

    /// An argument: a command or flag of the tool, a number, or any text.
    fn argument() -> impl Strategy<Value = String> {
        let known = prop::sample::select(vec![
            "migrate",
            "offsets",
            "show",
            "set",
            "reset",
            "lag",
            "outbox",
            "status",
            "dead-letters",
            "list",
            "replay",
            "transactions",
            "abort",
            "--json",
            "--database-url",
            "--brokers",
            "-X",
            "--kafka-setting",
            "-g",
            "--group",
            "-t",
            "--topic",
            "--mode",
            "auto",
            "kafka",
            "database",
            "-p",
            "--partition",
            "--offset",
            "--force",
            "--to",
            "--dry-run",
            "--limit",
            "--after",
            "--id",
            "--all",
            "--transactional-id",
            "--wait",
            "--help",
            "-h",
            "--version",
            "-V",
            "--",
            "-",
            "-5",
            "5",
            "",
        ]);
        prop_oneof![
            4 => known.prop_map(str::to_owned),
            1 => any::<String>(),
            1 => "--?[a-zA-Z-]{1,10}(=[ -~]{0,6})?",
            1 => any::<i64>().prop_map(|n| n.to_string()),
        ]
    }

    fn parse(arguments: &[String]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("exactly".to_owned()).chain(arguments.iter().cloned()))
    }

    fn set(partition: &str, offset: &str) -> Result<(i32, i64), String> {
        let arguments = ["offsets", "set", "-g", "g", "-t", "t", partition, offset].map(str::to_owned);
        match parse(&arguments).map_err(|e| e.to_string())?.command {
            Command::Offsets(OffsetsCommand::Set(set)) => Ok((set.partition, set.offset)),
            other => Err(format!("parsed as {other:?}")),
        }
    }

    /// clap's own checks of the command's definition (conflicting names, a required
    /// argument with a default, ...), which it makes only in debug builds and only when
    /// asked.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn no_argument_vector_panics_the_parser(arguments in prop::collection::vec(argument(), 0..10)) {
            match parse(&arguments) {
                Ok(cli) => {
                    let _ = format!("{cli:?}");
                    let _ = cli.connection.kafka_settings();
                }
                // An error renders (with usage, suggestions) without panicking too.
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }

        #[test]
        fn numbers_parse_to_themselves_in_every_form(partition in any::<i32>(), offset in any::<i64>(), form in 0..4u8) {
            let (p, o) = (partition.to_string(), offset.to_string());
            let written = match form {
                0 => (format!("--partition={p}"), format!("--offset={o}")),
                1 => (format!("-p{p}"), format!("--offset={o}")),
                2 => (format!("-p={p}"), format!("--offset={o}")),
                // A leading `+` and zeros are the same number.
                _ => (format!("-p=+00{}", partition.unsigned_abs()), format!("--offset=+0{}", offset.unsigned_abs())),
            };
            let expected = if form == 3 {
                (i32::try_from(partition.unsigned_abs()).ok(), i64::try_from(offset.unsigned_abs()).ok())
            } else {
                (Some(partition), Some(offset))
            };
            match (set(&written.0, &written.1), expected) {
                (Ok(got), (Some(p), Some(o))) => prop_assert_eq!(got, (p, o)),
                // |i32::MIN| is no i32: refused, never wrapped.
                (Err(_), (None, _) | (_, None)) => {}
                (got, expected) => prop_assert!(false, "{:?} gave {:?}, expected {:?}", written, got, expected),
            }
        }

        #[test]
        fn a_number_argument_takes_exactly_the_integers(text in prop_oneof![any::<String>(), "[0-9+ -]{0,21}", "[0-9]{18,21}"]) {
            let got = set(&format!("--partition={text}"), "--offset=0").ok().map(|(p, _)| p);
            prop_assert_eq!(got, text.parse::<i32>().ok(), "{:?}", text);
            let got = set("-p0", &format!("--offset={text}")).ok().map(|(_, o)| o);
            prop_assert_eq!(got, text.parse::<i64>().ok(), "{:?}", text);
        }

        #[test]
        fn settings_are_split_at_the_first_equals_sign_and_never_echoed(
            settings in prop::collection::vec(prop_oneof![
                ("[a-z.]{1,12}", "[ ]{0,2}", secret()).prop_map(|(key, blank, value)| format!("{blank}{key}{blank}={value}")),
                secret().prop_map(|text| text.replace('=', "")),
                secret().prop_map(|value| format!(" ={value}")),
            ], 1..5),
        ) {
            let arguments: Vec<String> =
                settings.iter().map(|s| format!("--kafka-setting={s}")).chain(["migrate".to_owned()]).collect();
            let cli = parse(&arguments).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&cli.connection.kafka_settings, &settings);
            let split: Vec<Option<(&str, &str)>> = settings
                .iter()
                .map(|s| s.split_once('=').filter(|(key, _)| !key.trim().is_empty()).map(|(key, value)| (key.trim(), value)))
                .collect();
            match cli.connection.kafka_settings() {
                Ok(pairs) => prop_assert_eq!(Some(pairs), split.into_iter().collect::<Option<Vec<_>>>()),
                Err(error) => {
                    let first = split.iter().position(Option::is_none).map_or(0, |i| i + 1);
                    let error = error.to_string();
                    prop_assert!(error.contains(&format!("setting {first} ")), "{}", error);
                    prop_assert!(!shows_a_secret(&error), "{}", error);
                }
            }
        }

        #[test]
        fn debug_shows_no_secret(
            user in "[a-z]{1,6}",
            password in secret(),
            host in "[a-z]{1,8}(:[0-9]{1,5})?/[a-z]{1,8}",
            secrets in prop::collection::vec((prop::sample::select(vec!["sasl.password", "SSL.KEY.PEM", "sasl.jaas.config", "my.token", "sasl.passwd", "ssl.key.pm"]), secret()), 0..3),
            malformed in prop::option::of(secret().prop_map(|text| text.replace('=', ""))),
            plain in prop::collection::vec((prop::sample::select(vec!["client.id", "linger.ms", "sasl.mechanism", "fetch.min.bytes"]), "[a-z0-9]{1,6}"), 0..3),
        ) {
            let mut settings: Vec<String> = secrets.iter().map(|(key, value)| format!("{key}={value}")).collect();
            settings.extend(malformed);
            settings.extend(plain.iter().map(|(key, value)| format!("{key}={value}")));
            let connection = Connection {
                database_url: Some(format!("postgres://{user}:{password}@{host}")),
                brokers: Some("broker:9092".to_owned()),
                kafka_settings: settings,
            };
            let shown = format!("{connection:?} {connection:#?}");
            prop_assert!(!shows_a_secret(&shown), "{}", shown);
            for (key, value) in &plain {
                prop_assert!(shown.contains(key) && shown.contains(value.as_str()), "{} lacks {}", shown, key);
            }
            prop_assert!(shown.contains(&format!("postgres://{user}:")), "{}", shown);
        }
    }
}
