//! Certificates made for one test run: a certificate authority and server certificates it
//! signs, so TLS is tested with verification on (host name or IP checked, chain checked).
//!
//! Keys are EC P-256 in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), which OpenSSL,
//! PostgreSQL and Java's PEM key stores all read.

use std::path::PathBuf;

use anyhow::Context;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509NameBuilder};

use crate::names::unique;

/// A certificate authority of this test run.
pub struct TestCa {
    key: PKey<Private>,
    cert: X509,
    /// Its certificate, PEM.
    pub pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A server's certificate and key, issued by a [`TestCa`].
#[derive(Clone)]
pub struct ServerCert {
    /// The server certificate followed by the CA's, PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM, unencrypted.
    pub key_pem: String,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert").finish_non_exhaustive()
    }
}

fn ec_key() -> anyhow::Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn serial() -> anyhow::Result<openssl::asn1::Asn1Integer> {
    let mut number = BigNum::new()?;
    number.rand(64, MsbOption::MAYBE_ZERO, false)?;
    Ok(number.to_asn1_integer()?)
}

fn name(common_name: &str) -> anyhow::Result<openssl::x509::X509Name> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "exactly tests")?;
    Ok(name.build())
}

/// Valid from an hour ago (clock skew between host and containers) for two days.
fn validity(builder: &mut openssl::x509::X509Builder) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let not_before = Asn1Time::from_unix(i64::try_from(now)? - 3600)?;
    let not_after = Asn1Time::days_from_now(2)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    Ok(())
}

impl TestCa {
    /// A new self-signed CA with a fresh key.
    pub fn new() -> anyhow::Result<Self> {
        let key = ec_key()?;
        let subject = name(&unique("exactly-test-ca"))?;
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let serial = serial()?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&subject)?;
        builder.set_issuer_name(&subject)?;
        builder.set_pubkey(&key)?;
        validity(&mut builder)?;
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        let cert = builder.build();
        let pem = String::from_utf8(cert.to_pem()?)?;
        Ok(Self { key, cert, pem })
    }

    /// A server certificate for `dns` names and `ips`, signed by this CA.
    pub fn issue(&self, dns: &[&str], ips: &[&str]) -> anyhow::Result<ServerCert> {
        let key = ec_key()?;
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let serial = serial()?;
        builder.set_serial_number(&serial)?;
        let subject = name(dns.first().or(ips.first()).copied().unwrap_or("server"))?;
        builder.set_subject_name(&subject)?;
        builder.set_issuer_name(self.cert.subject_name())?;
        builder.set_pubkey(&key)?;
        validity(&mut builder)?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        builder.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
        builder.append_extension(ExtendedKeyUsage::new().server_auth().client_auth().build()?)?;
        let mut san = SubjectAlternativeName::new();
        for name in dns {
            san.dns(name);
        }
        for ip in ips {
            san.ip(ip);
        }
        let san = san.build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(san)?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new().keyid(false).build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(aki)?;
        builder.sign(&self.key, MessageDigest::sha256())?;
        let cert = builder.build();
        Ok(ServerCert {
            chain_pem: format!("{}{}", String::from_utf8(cert.to_pem()?)?, self.pem),
            key_pem: String::from_utf8(key.private_key_to_pem_pkcs8()?)?,
        })
    }

    /// Writes the CA certificate to a new file in the temporary directory (for clients that
    /// take a path, like `sslrootcert` and `ssl.ca.location`); returns its path.
    pub fn write_pem_file(&self) -> anyhow::Result<PathBuf> {
        let path = std::env::temp_dir().join(format!("{}.pem", unique("exactly-ca")));
        std::fs::write(&path, &self.pem).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}
