//! The byte stream under the tool's own Kafka protocol calls ([`crate::admin`]): TCP, TLS
//! and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), set up from the same librdkafka settings
//! (`security.protocol`, `sasl.*`, `ssl.*`) as every other Kafka client of the tool.
//!
//! TLS is OpenSSL's, as in librdkafka: the broker's certificate chain is checked against
//! `ssl.ca.location` / `ssl.ca.pem` (or the system's CAs), and its name or IP address
//! against the host connected to, unless `ssl.endpoint.identification.algorithm=none`.

use std::io::{Read, Write};
use std::net::TcpStream;

use openssl::base64;
use openssl::hash::{MessageDigest, hash};
use openssl::pkcs5::pbkdf2_hmac;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::X509;
use rdkafka::ClientConfig;

use crate::error::Error;

/// A connection's byte stream: plain TCP or TLS over it.
pub(crate) enum Stream {
    /// PLAINTEXT and SASL_PLAINTEXT.
    Plain(TcpStream),
    /// SSL and SASL_SSL.
    Tls(Box<SslStream<TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buf),
            Stream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.write(buf),
            Stream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

/// A SASL login.
#[derive(Clone)]
pub(crate) struct Sasl {
    pub(crate) mechanism: Mechanism,
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The SASL mechanisms the tool speaks itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// How to reach brokers: TLS or not, SASL or not.
pub(crate) struct Security {
    tls: Option<Tls>,
    pub(crate) sasl: Option<Sasl>,
}

struct Tls {
    connector: SslConnector,
    verify_name: bool,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security").field("tls", &self.tls.is_some()).field("sasl", &self.sasl).finish()
    }
}

impl Security {
    /// From the librdkafka settings in `config`; `Ok(None)` when they ask for something the
    /// tool does not speak itself (GSSAPI, OAUTHBEARER).
    pub(crate) fn from_config(config: &ClientConfig) -> Result<Option<Self>, Error> {
        let protocol = config.get("security.protocol").unwrap_or("plaintext").to_ascii_lowercase();
        let (tls, sasl) = match protocol.as_str() {
            "plaintext" => (false, false),
            "ssl" => (true, false),
            "sasl_plaintext" => (false, true),
            "sasl_ssl" => (true, true),
            other => return Err(Error::Usage(format!("unknown security.protocol `{other}`"))),
        };
        let sasl = if sasl {
            let mechanism = match config.get("sasl.mechanisms").or(config.get("sasl.mechanism")).unwrap_or("GSSAPI") {
                "PLAIN" => Mechanism::Plain,
                "SCRAM-SHA-256" => Mechanism::ScramSha256,
                "SCRAM-SHA-512" => Mechanism::ScramSha512,
                _ => return Ok(None),
            };
            let username = config.get("sasl.username").unwrap_or_default().to_owned();
            let password = config.get("sasl.password").unwrap_or_default().to_owned();
            Some(Sasl { mechanism, username, password })
        } else {
            None
        };
        let tls = if tls { Some(tls_connector(config)?) } else { None };
        Ok(Some(Security { tls, sasl }))
    }

    /// Wraps `tcp`, connected to `host`, in TLS if asked for.
    pub(crate) fn wrap(&self, host: &str, tcp: TcpStream) -> Result<Stream, Error> {
        let Some(tls) = &self.tls else { return Ok(Stream::Plain(tcp)) };
        let configured = tls
            .connector
            .configure()
            .map_err(|e| Error::Unfinished(format!("cannot set up TLS to {host}: {e}")))?
            .verify_hostname(tls.verify_name);
        let stream = configured
            .connect(host, tcp)
            .map_err(|e| Error::Unfinished(format!("TLS handshake with broker {host} failed: {e}")))?;
        Ok(Stream::Tls(Box::new(stream)))
    }
}

fn tls_connector(config: &ClientConfig) -> Result<Tls, Error> {
    let failed = |what: &str, e: openssl::error::ErrorStack| Error::Usage(format!("{what}: {e}"));
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| failed("cannot set up TLS", e))?;
    match config.get("ssl.ca.location") {
        None | Some("probe") => {
            builder.set_default_verify_paths().map_err(|e| failed("cannot load the system CAs", e))?
        }
        Some(path) if std::path::Path::new(path).is_dir() => {
            builder.load_verify_locations(None, Some(std::path::Path::new(path))).map_err(|e| failed(path, e))?
        }
        Some(path) => {
            builder.set_ca_file(path).map_err(|e| failed(&format!("cannot read ssl.ca.location {path}"), e))?
        }
    }
    if let Some(pem) = config.get("ssl.ca.pem") {
        for cert in X509::stack_from_pem(pem.as_bytes()).map_err(|e| failed("cannot read ssl.ca.pem", e))? {
            builder.cert_store_mut().add_cert(cert).map_err(|e| failed("cannot use ssl.ca.pem", e))?;
        }
    }
    if let Some(path) = config.get("ssl.certificate.location") {
        builder.set_certificate_chain_file(path).map_err(|e| failed("cannot read ssl.certificate.location", e))?;
    }
    if let Some(path) = config.get("ssl.key.location") {
        builder.set_private_key_file(path, SslFiletype::PEM).map_err(|e| failed("cannot read ssl.key.location", e))?;
    }
    if config.get("enable.ssl.certificate.verification").is_some_and(|v| v.eq_ignore_ascii_case("false")) {
        builder.set_verify(SslVerifyMode::NONE);
    }
    let verify_name =
        !config.get("ssl.endpoint.identification.algorithm").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    Ok(Tls { connector: builder.build(), verify_name })
}

/// The messages of one SCRAM exchange (RFC 5802, no channel binding), client side.
pub(crate) struct Scram {
    digest: MessageDigest,
    key_length: usize,
    username: String,
    password: String,
    nonce: String,
    client_first_bare: String,
    /// The server's signature the final message must carry.
    server_signature: Option<Vec<u8>>,
}

/// The fewest iterations Kafka allows; fewer would be a downgrade.
const MIN_ITERATIONS: usize = 4096;

/// The most iterations Kafka allows (its `ScramMechanism`). A broker asking for more is
/// not following Kafka, and each iteration is client CPU: an unbounded count would let it
/// keep the tool busy for as long as it liked.
const MAX_ITERATIONS: usize = 16384;

impl Scram {
    pub(crate) fn new(mechanism: Mechanism, username: &str, password: &str) -> Result<Self, Error> {
        let mut random = [0u8; 24];
        openssl::rand::rand_bytes(&mut random).map_err(|e| Error::Unfinished(format!("no random bytes: {e}")))?;
        Ok(Self::with_nonce(mechanism, username, password, &base64::encode_block(&random)))
    }

    fn with_nonce(mechanism: Mechanism, username: &str, password: &str, nonce: &str) -> Self {
        let (digest, key_length) = match mechanism {
            Mechanism::ScramSha256 => (MessageDigest::sha256(), 32),
            _ => (MessageDigest::sha512(), 64),
        };
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            digest,
            key_length,
            username: username.to_owned(),
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            client_first_bare: format!("n={name},r={nonce}"),
            server_signature: None,
        }
    }

    /// `client-first-message`.
    pub(crate) fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// `client-final-message`, answering `server_first`.
    pub(crate) fn client_final(&mut self, server_first: &str) -> Result<String, Error> {
        let refused = |why: &str| Error::Unfinished(format!("SCRAM login of user {}: {why}", self.username));
        let field = |name: &str| {
            server_first.split(',').find_map(|part| part.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        };
        let nonce = field("r").ok_or_else(|| refused("the broker sent no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err(refused("the broker's nonce does not extend ours"));
        }
        let salt = base64::decode_block(field("s").ok_or_else(|| refused("the broker sent no salt"))?)
            .map_err(|_| refused("the broker's salt is not base64"))?;
        let iterations: usize =
            field("i").and_then(|i| i.parse().ok()).ok_or_else(|| refused("the broker sent no iteration count"))?;
        if iterations < MIN_ITERATIONS {
            return Err(refused(&format!("the broker asks for {iterations} iterations, fewer than {MIN_ITERATIONS}")));
        }
        if iterations > MAX_ITERATIONS {
            return Err(refused(&format!(
                "the broker asks for {iterations} iterations, more than Kafka allows ({MAX_ITERATIONS})"
            )));
        }
        let crypto = |e: openssl::error::ErrorStack| Error::Unfinished(format!("SCRAM: {e}"));
        let mut salted = vec![0; self.key_length];
        pbkdf2_hmac(self.password.as_bytes(), &salt, iterations, self.digest, &mut salted).map_err(crypto)?;
        let client_key = self.hmac(&salted, b"Client Key").map_err(crypto)?;
        let stored_key = hash(self.digest, &client_key).map_err(crypto)?;
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = self.hmac(&stored_key, auth_message.as_bytes()).map_err(crypto)?;
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = self.hmac(&salted, b"Server Key").map_err(crypto)?;
        self.server_signature = Some(self.hmac(&server_key, auth_message.as_bytes()).map_err(crypto)?);
        Ok(format!("{without_proof},p={}", base64::encode_block(&proof)))
    }

    /// Checks `server-final-message`: the broker proves it knows the password too.
    pub(crate) fn verify_server_final(&self, server_final: &str) -> Result<(), Error> {
        let refused = |why: String| Error::Unfinished(format!("SCRAM login of user {}: {why}", self.username));
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(refused(format!("the broker refused it: {error}")));
        }
        let sent = server_final
            .split(',')
            .find_map(|part| part.strip_prefix("v="))
            .and_then(|v| base64::decode_block(v).ok())
            .ok_or_else(|| refused("the broker's final message holds no signature".into()))?;
        match &self.server_signature {
            Some(expected) if openssl::memcmp::eq(expected, &sent) => Ok(()),
            _ => Err(refused("the broker's signature is wrong: it does not know the password".into())),
        }
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let key = PKey::hmac(key)?;
        let mut signer = Signer::new(self.digest, &key)?;
        signer.update(data)?;
        signer.sign_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user `user`, password `pencil`, SCRAM-SHA-256.
    #[test]
    fn scram_sha_256_matches_the_rfc_example() -> Result<(), Error> {
        let mut scram = Scram::with_nonce(Mechanism::ScramSha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            scram.client_final(server_first)?,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")?;
        assert!(scram.verify_server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").is_err());
        assert!(scram.verify_server_final("e=invalid-proof").is_err());
        Ok(())
    }

    #[test]
    fn scram_refuses_a_foreign_nonce_and_too_few_or_too_many_iterations() {
        let mut scram = Scram::with_nonce(Mechanism::ScramSha512, "u,=x", "pw", "abc");
        assert_eq!(scram.client_first(), "n,,n=u=2C=3Dx,r=abc");
        assert!(scram.client_final("r=zzzabc1,s=QUJD,i=4096").is_err(), "a nonce not starting with ours");
        assert!(scram.client_final("r=abc1,s=QUJD,i=1000").is_err(), "1000 iterations");
        assert!(scram.client_final("r=abc1,s=QUJD,i=16385").is_err(), "16385 iterations");
        assert!(scram.client_final("r=abc1,s=QUJD,i=4096").is_ok());
    }
}

/// Properties of the SCRAM client over generated broker messages, which come from the
/// network: none panics, and only a message that extends our nonce, with a salt and an
/// iteration count Kafka allows, is answered; only the broker's true signature is taken.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";

    fn mechanism() -> impl Strategy<Value = Mechanism> {
        prop_oneof![Just(Mechanism::ScramSha256), Just(Mechanism::ScramSha512)]
    }

    /// A `server-first-message`, valid or broken in one of its fields.
    fn server_first() -> impl Strategy<Value = (String, bool)> {
        let nonce = prop_oneof![
            "[!-+--~]{1,8}".prop_map(|more| (format!("{NONCE}{more}"), true)),
            Just((NONCE.to_owned(), false)),
            "[!-+--~]{0,8}".prop_map(|other| (format!("{other}{NONCE}x"), other.is_empty())),
        ];
        let salt = prop_oneof![
            prop::collection::vec(any::<u8>(), 1..16).prop_map(|salt| (base64::encode_block(&salt), true)),
            Just(("not base64!".to_owned(), false)),
        ];
        // Few iterations keep the test fast: the count is what is checked, not the work.
        let iterations = prop_oneof![
            (MIN_ITERATIONS..MIN_ITERATIONS + 8).prop_map(|i| (i.to_string(), true)),
            (0..MIN_ITERATIONS).prop_map(|i| (i.to_string(), false)),
            (MAX_ITERATIONS + 1..=usize::MAX).prop_map(|i| (i.to_string(), false)),
            "[a-z-]{0,3}".prop_map(|i| (i, false)),
        ];
        (nonce, salt, iterations, any::<u8>()).prop_map(|((nonce, n_ok), (salt, s_ok), (iterations, i_ok), drop)| {
            let fields = [format!("r={nonce}"), format!("s={salt}"), format!("i={iterations}")];
            // Now and then one field is left out.
            let kept: Vec<&String> =
                fields.iter().enumerate().filter(|(i, _)| usize::from(drop) != *i).map(|(_, f)| f).collect();
            let valid = n_ok && s_ok && i_ok && usize::from(drop) >= fields.len();
            (kept.into_iter().cloned().collect::<Vec<_>>().join(","), valid)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn a_user_name_is_escaped_so_that_it_reads_back(mechanism in mechanism(), name in any::<String>()) {
            let scram = Scram::with_nonce(mechanism, &name, "pw", NONCE);
            let first = scram.client_first();
            let field = first.strip_prefix("n,,n=").and_then(|rest| rest.strip_suffix(&format!(",r={NONCE}")));
            let field = field.ok_or_else(|| TestCaseError::fail(first.clone()))?;
            prop_assert!(!field.contains(','), "{}", field);
            prop_assert_eq!(field.replace("=2C", ",").replace("=3D", "="), name);
        }

        #[test]
        fn only_a_sound_server_first_message_is_answered(mechanism in mechanism(), (message, valid) in server_first()) {
            let mut scram = Scram::with_nonce(mechanism, "user", "pencil", NONCE);
            let answer = scram.client_final(&message);
            prop_assert_eq!(answer.is_ok(), valid, "{}: {:?}", message, answer);
        }

        #[test]
        fn any_server_message_gives_an_answer_or_an_error(
            mechanism in mechanism(),
            first in prop_oneof![any::<String>(), "[rsie=,0-9a-zA-Z+/]{0,40}"],
            last in prop_oneof![
                any::<String>(),
                "[ve=,0-9a-zA-Z+/]{0,40}",
                prop::collection::vec(any::<u8>(), 0..64).prop_map(|sent| format!("v={}", base64::encode_block(&sent))),
            ],
        ) {
            let mut scram = Scram::with_nonce(mechanism, "user", "pencil", NONCE);
            let answered = scram.client_final(&first).is_ok();
            // Without an answered first message there is no signature to match.
            prop_assert!(answered || scram.verify_server_final(&last).is_err());
        }

        #[test]
        fn only_the_true_server_signature_is_taken(
            mechanism in mechanism(),
            more in "[!-+--~]{1,8}",
            salt in prop::collection::vec(any::<u8>(), 1..16),
            flip in any::<prop::sample::Index>(),
            bit in 0..8u8,
        ) {
            let mut scram = Scram::with_nonce(mechanism, "user", "pencil", NONCE);
            let first = format!("r={NONCE}{more},s={},i={MIN_ITERATIONS}", base64::encode_block(&salt));
            scram.client_final(&first).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut signature = scram.server_signature.clone().unwrap_or_default();
            let true_final = format!("v={}", base64::encode_block(&signature));
            let at = flip.index(signature.len());
            signature[at] ^= 1 << bit;
            let false_final = format!("v={}", base64::encode_block(&signature));
            let refusal = format!("e={more}");
            prop_assert!(scram.verify_server_final(&true_final).is_ok());
            prop_assert!(scram.verify_server_final(&false_final).is_err());
            prop_assert!(scram.verify_server_final(&refusal).is_err());
        }
    }
}
