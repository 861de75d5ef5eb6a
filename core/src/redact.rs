//! Which settings are secrets, and how they print: every `Debug` of exactly's settings, and
//! every error a setting produces, shows `[redacted]` in place of a secret.
//!
//! A Kafka property is a secret when librdkafka marks it sensitive (`sasl.password`,
//! `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...; librdkafka redacts these in its
//! own dumps too), when it is one of the Java client's secret names users carry over
//! (`sasl.jaas.config`, `ssl.truststore.password`), or, to be safe with keys not known
//! here, when its name contains `password`, `secret`, `passphrase`, `jaas`, `token` or
//! `credential`, or ends in `.pem` with `key` in it. A property librdkafka does not know
//! prints redacted too: it may be a misspelt secret (`sasl.passwd`). A database URL prints
//! with its password replaced.

/// What a secret prints as.
pub const REDACTED: &str = "[redacted]";

/// librdkafka's sensitive properties (`_RK_SENSITIVE` in `rdkafka_conf.c`, librdkafka
/// 2.12), its alias for one of them, and secrets of the Java client's names.
const SECRET_KEYS: &[&str] = &[
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.client.credentials.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.ca.pem",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.truststore.password",
    "sasl.jaas.config",
];

/// Parts of a name that make any setting a secret, known here or not.
const SECRET_WORDS: &[&str] = &["password", "secret", "passphrase", "jaas", "token", "credential"];

/// Whether the Kafka client property (or database URL parameter) `key` holds a secret.
///
/// ```
/// use exactly::redact::is_secret_key;
/// assert!(is_secret_key("sasl.password"));
/// assert!(is_secret_key("ssl.key.pem"));
/// assert!(is_secret_key("SSL.Keystore.Password"));
/// assert!(!is_secret_key("bootstrap.servers"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    SECRET_KEYS.contains(&key.as_str())
        || SECRET_WORDS.iter().any(|word| key.contains(word))
        || (key.ends_with(".pem") && key.contains("key"))
}

/// How the value of the Kafka client property `key` prints: as it is, or [`REDACTED`] when
/// `key` is a secret ([`is_secret_key`]) or a property librdkafka does not know, which may
/// be a misspelt secret.
///
/// ```
/// use exactly::redact::property_value;
/// assert_eq!(property_value("bootstrap.servers", "kafka:9092"), "kafka:9092");
/// assert_eq!(property_value("sasl.password", "s3cret"), "[redacted]");
/// assert_eq!(property_value("sasl.passwd", "s3cret"), "[redacted]");
/// ```
pub fn property_value<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret_key(key) || !known_to_librdkafka(key) { REDACTED } else { value }
}

/// Whether the librdkafka linked here has a client property named `key`: it is set, empty,
/// on a configuration made for the question and dropped, and librdkafka says whether it
/// knows the name (a known property may still refuse the empty value). Asking for the value
/// instead would not do: librdkafka answers "unknown" for a string property not set yet.
/// No property acts on an empty value when it is set (`plugin.library.paths` loads nothing).
fn known_to_librdkafka(key: &str) -> bool {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaConfRes;
    !matches!(
        rdkafka::ClientConfig::new().set(key.trim(), "").create_native_config(),
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..))
    )
}

/// `error` with the value of a refused client setting replaced by [`REDACTED`], in the
/// error and in librdkafka's description of it: the key may be a misspelt secret, which
/// [`is_secret_key`] cannot know. exactly's [`Error`](crate::Error) does this to every
/// Kafka error it carries.
pub fn kafka_error(error: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    use rdkafka::error::KafkaError;
    match error {
        KafkaError::ClientConfig(code, description, key, value) => {
            let description =
                if value.trim().is_empty() { description } else { description.replace(value.as_str(), REDACTED) };
            KafkaError::ClientConfig(code, description, key, REDACTED.to_owned())
        }
        other => other,
    }
}

/// Properties as a `Debug` map, secrets redacted.
pub(crate) struct Properties<'a, I>(pub(crate) &'a I);

impl<'a, I, K, V> std::fmt::Debug for Properties<'a, I>
where
    &'a I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.into_iter().map(|(k, v)| {
                let shown = property_value(k.as_ref(), v.as_ref()).to_owned();
                (k.as_ref().to_owned(), shown)
            }))
            .finish()
    }
}

/// A PostgreSQL URL with its password (in the user part, or a `password`-like query
/// parameter) and the value of any parameter PostgreSQL connections do not take (a
/// misspelt `pasword=...`) replaced by [`REDACTED`]; anything else is kept, so the URL still
/// says which server, database and user it is. Text that is not a URL is redacted whole, and
/// so is all after the user name when the password may hold a `?` or `#` not percent-encoded
/// (a `:` before the first `?` or `#`, an `@` after it: `app:pa?ss@db/orders`).
///
/// ```
/// use exactly::redact::redact_url;
/// assert_eq!(
///     redact_url("postgres://app:s3cret@db:5432/orders?sslmode=verify-full"),
///     "postgres://app:[redacted]@db:5432/orders?sslmode=verify-full"
/// );
/// assert_eq!(redact_url("postgres://db/orders?user=app&password=s3cret"), "postgres://db/orders?user=app&password=[redacted]");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return REDACTED.to_owned();
    };
    if user_part_unclear(rest) {
        let user = rest.split_once(':').map_or(rest, |(user, _)| user);
        return format!("{scheme}://{user}:{REDACTED}");
    }
    // The user part ends at the last `@` before the query, so a password with `/` or `@`
    // in it is still found whole.
    let stop = rest.find(['?', '#']).unwrap_or(rest.len());
    let (user, path) = match rest[..stop].rfind('@') {
        Some(at) => {
            let user = match rest[..at].split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}@"),
                None => format!("{}@", &rest[..at]),
            };
            (user, &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    let (path, fragment) = match path.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (path, None),
    };
    let path = match path.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    // A parameter sqlx does not know may be a misspelt secret.
                    Some((key, _)) if is_secret_key(key) || !DATABASE_URL_PARAMETERS.contains(&key) => {
                        format!("{key}={REDACTED}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => path.to_owned(),
    };
    match fragment {
        Some(_) => format!("{scheme}://{user}{path}#{REDACTED}"),
        None => format!("{scheme}://{user}{path}"),
    }
}

/// Whether `rest`, a URL after its `://`, may have a password with a `?` or `#` in it that
/// is not percent-encoded: a `:` before the first `?` or `#`, and an `@` after it. Such a
/// password would be taken for the start of the query or the fragment, and where the user
/// part ends cannot be told (`app:pa?ss@db/orders` and `db:5432/orders?password=pa@ss`
/// both look like it).
fn user_part_unclear(rest: &str) -> bool {
    let stop = rest.find(['?', '#']).unwrap_or(rest.len());
    rest[..stop].contains(':') && rest[stop..].contains('@')
}

/// The query parameters of a PostgreSQL URL that sqlx reads; it ignores any other, but logs
/// it with its value (which may be a secret put in the wrong place).
const DATABASE_URL_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// `url` without the query parameters sqlx would ignore, and their names: sqlx logs an
/// ignored parameter with its value. The caller logs the names; they are [`REDACTED`] when
/// they may be a piece of a password that holds a `?` not percent-encoded (as
/// [`redact_url`] tells).
#[doc(hidden)]
pub fn known_database_parameters(url: &str) -> (String, Vec<String>) {
    let unclear = url.split_once("://").is_some_and(|(_, rest)| user_part_unclear(rest));
    // The fragment goes first: a `?` in it starts no query.
    let (url, fragment) = match url.split_once('#') {
        Some((url, fragment)) => (url, Some(fragment)),
        None => (url, None),
    };
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        if DATABASE_URL_PARAMETERS.contains(&key) || (key.starts_with("options[") && key.ends_with(']')) {
            kept.push(pair);
        } else {
            dropped.push(if unclear { REDACTED.to_owned() } else { key.to_owned() });
        }
    }
    let mut url = head.to_owned();
    if !kept.is_empty() {
        url.push('?');
        url.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        url.push('#');
        url.push_str(fragment);
    }
    (url, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sensitive_librdkafka_property_is_a_secret() {
        // The properties librdkafka 2.12 flags `_RK_SENSITIVE`.
        for key in [
            "ssl.key.location",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl_key",
            "ssl.ca.pem",
            "ssl.keystore.password",
            "sasl.username",
            "sasl.password",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.assertion.private.key.file",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["bootstrap.servers", "security.protocol", "sasl.mechanism", "ssl.ca.location", "client.id"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn a_property_librdkafka_does_not_know_prints_redacted() {
        for key in ["sasl.passwd", "ssl.key.pm", "sasl.pasword", "sasl.plain.pass"] {
            assert_eq!(property_value(key, "s3cret"), REDACTED, "{key}");
        }
        // Global properties, topic properties, and an alias of one.
        for key in ["bootstrap.servers", "linger.ms", " client.id ", "isolation.level", "auto.offset.reset", "acks"] {
            assert_eq!(property_value(key, "shown"), "shown", "{key}");
        }
    }

    #[test]
    fn urls_keep_everything_but_the_password() {
        assert_eq!(redact_url("postgres://u:p%40ss@h/d"), "postgres://u:[redacted]@h/d");
        assert_eq!(redact_url("postgres://u@h:5/d"), "postgres://u@h:5/d");
        assert_eq!(redact_url("postgres://u:a/b@c@h/d?port=1"), "postgres://u:[redacted]@h/d?port=1");
        assert_eq!(
            redact_url("postgres://h/d?sslpassword=x&sslmode=require"),
            "postgres://h/d?sslpassword=[redacted]&sslmode=require"
        );
        assert_eq!(redact_url("postgres://h/d?pasword=x&port=5"), "postgres://h/d?pasword=[redacted]&port=5");
        assert_eq!(redact_url("not a url s3cret"), REDACTED);
    }

    /// Found by `no_piece_of_a_secret_shows_whatever_it_holds`: a password with a `?` or
    /// `#` not percent-encoded printed whole (`postgres://a:α?@a` as itself), or its end
    /// printed as the name of a parameter PostgreSQL does not take.
    #[test]
    fn a_password_with_a_question_mark_or_hash_does_not_show() {
        assert_eq!(redact_url("postgres://app:pa?ss@db/orders"), "postgres://app:[redacted]");
        assert_eq!(redact_url("postgres://app:pa#ss@db/orders?sslmode=require"), "postgres://app:[redacted]");
        assert_eq!(known_database_parameters("postgres://app:pa?ss@db/orders").1, vec![REDACTED.to_owned()]);
        // The same shape without a user: a password parameter with an `@` in it.
        assert_eq!(redact_url("postgres://db:5432/orders?password=pa@ss"), "postgres://db:[redacted]");
        // Without a `:` before the query, there is no password to hide.
        assert_eq!(
            redact_url("postgres://db/orders?application_name=me@home"),
            "postgres://db/orders?application_name=me@home"
        );
    }

    /// Found by the same property: a `?` in the fragment was read as the start of a query,
    /// and what followed it given as the name of a parameter.
    #[test]
    fn a_question_mark_in_the_fragment_starts_no_query() {
        for url in ["postgres://h/d#x?secret", "postgres://h/d?sslmode=require#x?secret"] {
            assert_eq!(known_database_parameters(url), (url.to_owned(), Vec::new()));
        }
    }

    #[test]
    fn unknown_url_parameters_are_dropped_by_name() {
        let (url, dropped) = known_database_parameters("postgres://h/d?sslmode=require&pasword=x&options[a]=b");
        assert_eq!(url, "postgres://h/d?sslmode=require&options[a]=b");
        assert_eq!(dropped, vec!["pasword".to_owned()]);
        assert_eq!(known_database_parameters("postgres://h/d").0, "postgres://h/d");
    }
}

/// Properties of redaction over generated settings and URLs: no secret, whatever characters
/// it holds, reaches the output, and everything else does.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Letters that only secrets are made of here, so that any one of them in an output is a
    /// piece of a secret shown.
    const SECRET_LETTERS: &str = "αβγδεζηθικλμνξοπρστυφχψω";

    fn shows_a_secret(text: &str) -> bool {
        text.chars().any(|c| SECRET_LETTERS.contains(c))
    }

    /// A secret: secret letters with the characters a URL gives a meaning to (and that need
    /// percent-encoding in one), in any order, at least one letter.
    fn secret(specials: &'static str) -> impl Strategy<Value = String> {
        let letter = prop::sample::select(SECRET_LETTERS.chars().collect::<Vec<_>>());
        let special = prop::sample::select(specials.chars().collect::<Vec<_>>());
        (letter.clone(), prop::collection::vec(prop_oneof![letter, special], 0..12)).prop_map(|(first, rest)| {
            let mut chars = rest;
            let at = chars.len() / 2;
            chars.insert(at, first);
            chars.into_iter().collect()
        })
    }

    /// The characters that mean something in a URL, and a few that need encoding.
    const URL_SPECIALS: &str = "@:/?#%&= +[]é";

    /// Percent-encodes all but RFC 3986's unreserved characters.
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// Where a PostgreSQL server is: host (name, IPv4 or IPv6), port, database.
    fn place() -> impl Strategy<Value = String> {
        let host = prop_oneof![
            "[a-z][a-z0-9-]{0,8}(\\.[a-z0-9-]{1,6}){0,2}",
            "10\\.[0-9]{1,3}\\.0\\.1",
            Just("[::1]".to_owned())
        ];
        (host, prop::option::of(any::<u16>()), prop::option::of("[a-zA-Z0-9_]{1,8}")).prop_map(|(host, port, db)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let db = db.map(|d| format!("/{d}")).unwrap_or_default();
            format!("{host}{port}{db}")
        })
    }

    /// A known parameter that is no secret, with a value that needs no encoding.
    fn plain_parameter() -> impl Strategy<Value = String> {
        let key = prop::sample::select(
            DATABASE_URL_PARAMETERS.iter().copied().filter(|key| !is_secret_key(key)).collect::<Vec<_>>(),
        );
        (key, "[a-z0-9_./:-]{0,8}").prop_map(|(key, value)| format!("{key}={value}"))
    }

    /// A parameter whose value must not show: a secret one, or one PostgreSQL does not take
    /// (a misspelt secret, perhaps).
    fn secret_parameter(specials: &'static str) -> impl Strategy<Value = (String, String)> {
        let key = prop_oneof![
            Just("password".to_owned()),
            Just("sslpassword".to_owned()),
            Just("pasword".to_owned()),
            "[a-z_]{1,8}".prop_filter("a known parameter", |key| !DATABASE_URL_PARAMETERS.contains(&key.as_str())),
        ];
        (key, secret(specials))
    }

    /// `text` with the letters whose bit is set in `mask` in upper case, and blanks around.
    fn any_case(text: &str, mask: u32, padding: &str) -> String {
        let text: String = text
            .chars()
            .enumerate()
            .map(|(i, c)| if mask >> (i % 32) & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect();
        format!("{padding}{text}{padding}")
    }

    /// The name of a secret setting, in any case, perhaps with blanks around: one librdkafka
    /// or the Java client names, one with a secret word in it, or a key in PEM.
    fn secret_key() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            prop::sample::select(SECRET_KEYS.to_vec()).prop_map(str::to_owned),
            ("[a-z._]{0,6}", prop::sample::select(SECRET_WORDS.to_vec()), "[a-z._]{0,6}")
                .prop_map(|(before, word, after)| format!("{before}{word}{after}")),
            "[a-z._]{0,6}key[a-z._]{0,6}\\.pem",
        ];
        (name, any::<u32>(), "[ \t]{0,2}").prop_map(|(name, mask, padding)| any_case(&name, mask, &padding))
    }

    /// librdkafka properties that hold no secret.
    const PLAIN_KEYS: &[&str] =
        &["bootstrap.servers", "client.id", "security.protocol", "sasl.mechanism", "fetch.min.bytes", "linger.ms"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_url_keeps_all_but_its_secrets(
            user in "[a-z][a-z0-9_]{0,7}",
            password in prop::option::of((secret(URL_SPECIALS), any::<bool>())),
            place in place(),
            plain in prop::collection::vec(plain_parameter(), 0..3),
            // No `@` and no `&` in a value here: see the properties after this one.
            secrets in prop::collection::vec(secret_parameter(":/?=%+ é"), 0..3),
            order in any::<u8>(),
        ) {
            let mut parameters: Vec<(String, String)> = plain.iter().map(|p| (p.clone(), p.clone())).collect();
            for (i, (key, value)) in secrets.iter().enumerate() {
                let at = (usize::from(order) + i) % (parameters.len() + 1);
                parameters.insert(at, (format!("{key}={value}"), format!("{key}={REDACTED}")));
            }
            let query = |which: fn(&(String, String)) -> &String| {
                if parameters.is_empty() { String::new() } else {
                    format!("?{}", parameters.iter().map(which).cloned().collect::<Vec<_>>().join("&"))
                }
            };
            let (url, expected) = match &password {
                None => (format!("postgres://{user}@{place}{}", query(|p| &p.0)), format!("postgres://{user}@{place}{}", query(|p| &p.1))),
                Some((password, encoded)) => {
                    let written = if *encoded { encode(password) } else { password.clone() };
                    let url = format!("postgres://{user}:{written}@{place}{}", query(|p| &p.0));
                    // Written as it is, a `?` or `#` in the password hides where the user
                    // part ends: all after the user name goes.
                    let expected = if !*encoded && password.contains(['?', '#']) {
                        format!("postgres://{user}:{REDACTED}")
                    } else {
                        format!("postgres://{user}:{REDACTED}@{place}{}", query(|p| &p.1))
                    };
                    (url, expected)
                }
            };
            prop_assert_eq!(redact_url(&url), expected, "{}", url);
        }

        #[test]
        fn no_piece_of_a_secret_shows_whatever_it_holds(
            user in "[a-z][a-z0-9_]{0,7}",
            password in prop::option::of(secret(URL_SPECIALS)),
            place in place(),
            plain in prop::collection::vec(plain_parameter(), 0..2),
            // A raw `&` in a value starts the next parameter for every reader, sqlx's too.
            secrets in prop::collection::vec(secret_parameter("@:/?#=%+ é"), 0..3),
            fragment in prop::option::of(secret(URL_SPECIALS)),
        ) {
            let mut parameters = plain;
            parameters.extend(secrets.iter().map(|(key, value)| format!("{key}={value}")));
            let user = match password {
                Some(password) => format!("{user}:{password}@"),
                None => format!("{user}@"),
            };
            let query = if parameters.is_empty() { String::new() } else { format!("?{}", parameters.join("&")) };
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            let url = format!("postgres://{user}{place}{query}{fragment}");
            let shown = redact_url(&url);
            prop_assert!(!shows_a_secret(&shown), "{} shown as {}", url, shown);
            let (_, dropped) = known_database_parameters(&url);
            prop_assert!(!dropped.iter().any(|name| shows_a_secret(name)), "{} drops {:?}", url, dropped);
        }

        #[test]
        fn text_that_is_not_a_url_is_redacted_whole_and_a_url_keeps_its_scheme(
            text in prop_oneof![
                any::<String>(),
                (any::<String>(), any::<String>()).prop_map(|(scheme, rest)| format!("{scheme}://{rest}")),
            ],
        ) {
            let shown = redact_url(&text);
            match text.split_once("://") {
                None => prop_assert_eq!(shown, REDACTED),
                Some((scheme, _)) => prop_assert!(shown.starts_with(&format!("{scheme}://")), "{}", shown),
            }
        }

        #[test]
        fn known_parameters_are_kept_and_others_dropped_by_name(
            head in "postgres://[a-z]{1,4}(:[a-z0-9]{1,4})?@[a-z]{1,6}(:[0-9]{1,5})?(/[a-z]{1,6})?",
            parameters in prop::collection::vec(prop_oneof![
                plain_parameter(),
                "options\\[[a-z_]{1,6}\\]=[a-z0-9]{0,4}",
                "[a-z_]{1,8}(=[a-z0-9]{0,4})?",
                Just(String::new()),
            ], 0..5),
            fragment in prop::option::of("[a-z0-9]{0,6}"),
        ) {
            let query = if parameters.is_empty() { String::new() } else { format!("?{}", parameters.join("&")) };
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            let url = format!("{head}{query}{fragment}");
            let key = |pair: &String| pair.split_once('=').map_or(pair.clone(), |(key, _)| key.to_owned());
            let known = |pair: &String| {
                let key = key(pair);
                DATABASE_URL_PARAMETERS.contains(&key.as_str()) || (key.starts_with("options[") && key.ends_with(']'))
            };
            let kept: Vec<String> = parameters.iter().filter(|p| !p.is_empty() && known(p)).cloned().collect();
            let dropped: Vec<String> = parameters.iter().filter(|p| !p.is_empty() && !known(p)).map(key).collect();
            let kept = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
            let expected = format!("{head}{kept}{fragment}");
            let (cleaned, names) = known_database_parameters(&url);
            prop_assert_eq!(&cleaned, &expected);
            prop_assert_eq!(names, dropped);
            // What is kept is kept again.
            prop_assert_eq!(known_database_parameters(&cleaned), (expected, Vec::new()));
        }

        #[test]
        fn a_secret_key_is_a_secret_in_any_case_and_spacing(key in secret_key()) {
            prop_assert!(is_secret_key(&key), "{:?}", key);
        }

        #[test]
        fn a_key_is_a_secret_whatever_its_case_and_spacing(
            key in prop_oneof![secret_key(), "[a-zA-Z._]{0,24}"],
            padding in "[ \t]{0,2}",
        ) {
            let secret = is_secret_key(&key);
            prop_assert_eq!(is_secret_key(&key.to_ascii_uppercase()), secret);
            prop_assert_eq!(is_secret_key(&key.to_ascii_lowercase()), secret);
            prop_assert_eq!(is_secret_key(&format!("{padding}{key}{padding}")), secret);
        }

        #[test]
        fn properties_print_every_key_and_only_plain_known_values(
            settings in prop::collection::vec((
                prop_oneof![
                    secret_key(),
                    prop::sample::select(PLAIN_KEYS).prop_map(str::to_owned),
                    // No librdkafka property ends in `.x`: names it does not know.
                    "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}\\.x",
                ],
                secret(URL_SPECIALS),
            ), 0..6),
        ) {
            let settings: std::collections::BTreeMap<String, String> = settings.into_iter().collect();
            let shown = format!("{:?}", Properties(&settings));
            let plain = |key: &str| PLAIN_KEYS.contains(&key);
            for (key, value) in &settings {
                let entry = if plain(key) { format!("{key:?}: {value:?}") } else { format!("{key:?}: {REDACTED:?}") };
                prop_assert!(shown.contains(&entry), "{} lacks {}", shown, entry);
                let shared = settings.iter().any(|(other, same)| same == value && plain(other));
                prop_assert!(shared || !shown.contains(&format!(": {value:?}")), "{} shows the value of {}", shown, key);
            }
            prop_assert_eq!(shows_a_secret(&shown), settings.keys().any(|key| plain(key)), "{}", shown);
        }

        #[test]
        fn a_refused_client_setting_never_repeats_its_value(
            key in "[a-z.]{1,16}",
            value in secret(URL_SPECIALS),
            before in "[a-z :`\"]{0,12}",
            after in "[a-z :`\"]{0,12}",
        ) {
            use rdkafka::error::{KafkaError, RDKafkaErrorCode};
            use rdkafka::types::RDKafkaConfRes;
            let description = format!("{before}{value}{after}{value}");
            let error = KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_INVALID, description, key.clone(), value.clone());
            let shown = kafka_error(error);
            let text = format!("{shown} {shown:?}");
            prop_assert!(!shows_a_secret(&text), "{}", text);
            prop_assert!(text.contains(&key), "{}", text);
            let other = KafkaError::MessageProduction(RDKafkaErrorCode::Fail);
            prop_assert_eq!(kafka_error(other.clone()).to_string(), other.to_string());
        }
    }
}
