//! librdkafka settings given in the environment (`EXACTLY_RDKAFKA_<KEY>`), so TLS and SASL
//! settings, passwords included, can come from the deployment rather than the code.

/// The prefix of environment variables that hold librdkafka settings:
/// `EXACTLY_RDKAFKA_SASL_PASSWORD` is `sasl.password`.
pub const KAFKA_ENV_PREFIX: &str = "EXACTLY_RDKAFKA_";

/// librdkafka settings from the environment: every variable named
/// [`KAFKA_ENV_PREFIX`]`<KEY>`, sorted by key.
///
/// `<KEY>` becomes the setting's name by the rules of Kafka's container images: lower
/// case, `_` is `.`, `__` is `_` and `___` is `-`. So `EXACTLY_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL`
/// sets `security.protocol`, `EXACTLY_RDKAFKA_SASL_MECHANISM=SCRAM-SHA-512` sets
/// `sasl.mechanism`, and `EXACTLY_RDKAFKA_SSL_CA_LOCATION` sets `ssl.ca.location`.
/// Variables whose name or value is not UTF-8 are skipped.
///
/// [`RuntimeBuilder::kafka_settings_from_env`](crate::RuntimeBuilder::kafka_settings_from_env),
/// [`Relay::kafka_settings_from_env`](crate::outbox::Relay::kafka_settings_from_env) and the
/// `exactly` command-line tool read them.
pub fn kafka_settings_from_env() -> Vec<(String, String)> {
    kafka_settings_from(
        std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?))),
    )
}

/// [`kafka_settings_from_env`] over any list of variables.
pub(crate) fn kafka_settings_from(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(KAFKA_ENV_PREFIX)?;
            (!key.is_empty()).then(|| (setting_name(key), value))
        })
        .collect();
    settings.sort();
    settings
}

/// `SASL_PASSWORD` -> `sasl.password`, `___` -> `-`, `__` -> `_`.
fn setting_name(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let part = |part: &str| part.split("__").map(|word| word.replace('_', ".")).collect::<Vec<_>>().join("_");
    lower.split("___").map(part).collect::<Vec<_>>().join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn environment_variables_map_to_librdkafka_settings() {
        let settings = kafka_settings_from(vars(&[
            ("EXACTLY_RDKAFKA_SASL_PASSWORD", "s3cret=="),
            ("EXACTLY_RDKAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("EXACTLY_RDKAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("EXACTLY_RDKAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
            ("EXACTLY_RDKAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "https"),
            ("EXACTLY_RDKAFKA_SOME__UNDERSCORED___DASHED", "x"),
            ("EXACTLY_RDKAFKA_", "no key"),
            ("EXACTLY_KAFKA_IMAGE", "not a setting"),
            ("EXACTLY_DATABASE_URL", "not a setting"),
            ("SASL_PASSWORD", "not a setting"),
        ]));
        assert_eq!(
            settings,
            vars(&[
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.password", "s3cret=="),
                ("security.protocol", "SASL_SSL"),
                ("some_underscored-dashed", "x"),
                ("ssl.ca.location", "/etc/ca.pem"),
                ("ssl.endpoint.identification.algorithm", "https"),
            ])
        );
    }
}

/// Properties of the variable names over generated settings: a setting written as a
/// variable the way the documentation says is read back as itself.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A librdkafka setting name: lowercase words joined by `.`, `_` or `-`, never two
    /// joiners in a row (no librdkafka setting has them, and `._` would be ambiguous).
    fn setting() -> impl Strategy<Value = String> {
        let joiner = prop::sample::select(vec!['.', '_', '-']);
        ("[a-z0-9]{1,6}", prop::collection::vec((joiner, "[a-z0-9]{1,6}"), 0..4)).prop_map(|(first, rest)| {
            rest.into_iter().fold(first, |mut name, (joiner, word)| {
                name.push(joiner);
                name.push_str(&word);
                name
            })
        })
    }

    /// The variable for `setting`: upper case, `.` as `_`, `_` as `__`, `-` as `___`.
    fn variable(setting: &str) -> String {
        let name: String = setting
            .chars()
            .map(|c| match c {
                '.' => "_".to_owned(),
                '_' => "__".to_owned(),
                '-' => "___".to_owned(),
                c => c.to_ascii_uppercase().to_string(),
            })
            .collect();
        format!("{KAFKA_ENV_PREFIX}{name}")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_setting_written_as_a_variable_reads_back_as_itself(
            settings in prop::collection::btree_map(setting(), any::<String>(), 0..4),
            others in prop::collection::vec(("[A-Z_]{0,12}", any::<String>()), 0..3),
        ) {
            let mut vars: Vec<(String, String)> =
                settings.iter().map(|(setting, value)| (variable(setting), value.clone())).collect();
            // Variables without the prefix are not settings.
            vars.extend(others.into_iter().filter(|(name, _)| !name.starts_with(KAFKA_ENV_PREFIX)));
            let read = kafka_settings_from(vars);
            prop_assert_eq!(read, settings.into_iter().collect::<Vec<_>>());
        }
    }
}
