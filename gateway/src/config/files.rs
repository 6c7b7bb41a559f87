//! The files a config names for TLS (CA certificates, certificate chains, private keys),
//! read and checked. Config validation runs these checks so that `check-config` names a bad
//! file; the stages that use the files load them through the same functions when they build
//! their TLS configuration: the link security module (`tls.rs`) at every connect of a link (so a renewed
//! certificate is picked up without a restart), the device gate at start.
//!
//! Invariants:
//! - Nothing here builds a TLS configuration or opens a connection: it reads files, parses
//!   PEM and DER, and checks that a key goes with its certificate.
//! - Errors name the key path and the file, never their contents: no key bytes and no PEM
//!   text ever reach a message.

mod x509;

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::{ClientCert, DeviceTls, TlsSettings};

/// A TLS setting that cannot be used, at its key path (`cloud.ca_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileError {
    /// The key path.
    pub key: String,
    /// What is wrong, naming the file.
    pub message: String,
}

impl std::fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn fail(settings: &TlsSettings, key: &str, message: String) -> TlsFileError {
    TlsFileError { key: format!("{}.{key}", settings.section), message }
}

/// The crypto provider every TLS configuration of the gateway uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every problem with a link's TLS settings (CA, client certificate and key, server
/// name), for config validation; empty when a client configuration can be built from them.
pub fn check_link(settings: &TlsSettings) -> Vec<TlsFileError> {
    let provider = provider();
    let mut errors = Vec::new();
    if !settings.insecure_skip_verify {
        if let Err(err) = roots(settings) {
            errors.push(err);
        }
    }
    let identity = settings.client.as_ref().map(|client| (client, identity(settings, client, &provider)));
    if let Some((_, Err(err))) = &identity {
        errors.push(err.clone());
    }
    if let Some(name) = &settings.server_name {
        if let Err(err) = server_name(settings, name) {
            errors.push(err);
        }
    }
    // What building the client configuration would still refuse: a chain and key that
    // rustls cannot pair (the checks above found nothing else wrong).
    if let (true, Some((client, Ok((certs, key))))) = (errors.is_empty(), identity) {
        if let Err(err) = CertifiedKey::from_der(certs, key, &provider) {
            errors.push(unusable_identity(settings, client, &err));
        }
    }
    errors
}

/// The error of a client certificate and key that rustls refuses to use together.
pub fn unusable_identity(settings: &TlsSettings, client: &ClientCert, err: &rustls::Error) -> TlsFileError {
    fail(
        settings,
        "key_file",
        format!("{} cannot be used with {}: {err}", show(&client.key_file), show(&client.cert_file)),
    )
}

/// Unix seconds as `2021-01-01 00:00:00Z`, for expiry messages.
// The one civil-date formatter still lives in admin.rs; when the shared time module of
// issue 13 (item 4) takes it, this names that leaf module instead. Until then this is the
// one place where config reaches outside itself, and only for a pure function.
fn utc(secs: i64) -> String {
    crate::time::format_time(secs * 1000)
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// `server_name` as a TLS server name.
pub fn server_name(settings: &TlsSettings, name: &str) -> Result<ServerName<'static>, TlsFileError> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| fail(settings, "server_name", format!("{name:?} is not a DNS name or an IP address")))
}

fn read(settings: &TlsSettings, key: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| fail(settings, key, format!("cannot read {}: {e}", show(path))))
}

fn certificates(settings: &TlsSettings, key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(settings, key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(settings, key, format!("{}: not a valid PEM file ({e})", show(path))))?;
    if certs.is_empty() {
        return Err(fail(settings, key, format!("{}: no PEM certificate (BEGIN CERTIFICATE) in it", show(path))));
    }
    Ok(certs)
}

/// The certificates a link trusts: `ca_file`, or the system's when it is not set.
pub fn roots(settings: &TlsSettings) -> Result<RootCertStore, TlsFileError> {
    let mut store = RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            for (n, cert) in certificates(settings, "ca_file", path)?.into_iter().enumerate() {
                store.add(cert).map_err(|e| {
                    fail(
                        settings,
                        "ca_file",
                        format!("{}: certificate {} is not usable as a CA: {e}", show(path), n + 1),
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(fail(
                    settings,
                    "ca_file",
                    "not set, and no system CA certificates were found (install ca-certificates, or set it to the broker's CA)"
                        .into(),
                ));
            }
        }
    }
    Ok(store)
}

/// The client certificate chain and key, checked: parseable, in date, and matching.
pub fn identity(
    settings: &TlsSettings,
    client: &ClientCert,
    provider: &CryptoProvider,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsFileError> {
    let certs = certificates(settings, "cert_file", &client.cert_file)?;
    let cert_file = show(&client.cert_file);
    let Some((not_before, not_after)) = x509::validity(&certs[0]) else {
        return Err(fail(settings, "cert_file", format!("{cert_file}: the first certificate is not valid X.509")));
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if now > not_after {
        let when = utc(not_after);
        return Err(fail(settings, "cert_file", format!("{cert_file}: the certificate expired at {when}; renew it")));
    }
    if now < not_before {
        let when = utc(not_before);
        return Err(fail(
            settings,
            "cert_file",
            format!("{cert_file}: the certificate is not valid before {when} (is this machine's clock right?)"),
        ));
    }
    let key_file = show(&client.key_file);
    // The key's own bytes and parse details stay out of every message.
    let bytes = read(settings, "key_file", &client.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        fail(
            settings,
            "key_file",
            format!("{key_file}: no private key in it (expected PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")"),
        )
    })?;
    let signer = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| fail(settings, "key_file", format!("{key_file}: unsupported private key type")))?;
    match CertifiedKey::new(certs.clone(), signer).keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(fail(
            settings,
            "key_file",
            format!("{key_file} is not the key of the certificate in {cert_file} (their public keys differ)"),
        )),
        _ => Ok((certs, key)),
    }
}

/// The device listener's files, loaded: what its server configuration is built from.
#[derive(Debug)]
pub struct DeviceFiles {
    /// The certificate chain (`tls_cert_file`), leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// Its private key (`tls_key_file`).
    pub key: PrivateKeyDer<'static>,
    /// The CA client certificates must chain to (`tls_client_ca_file`), when set.
    pub client_roots: Option<RootCertStore>,
}

fn device_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"));
    }
    Ok(certs)
}

/// Reads the device listener's files. `Err` is `(which key under devices, message)`.
pub fn load_device_tls(tls: &DeviceTls) -> Result<DeviceFiles, (String, String)> {
    let certs = device_certs(&tls.cert_file).map_err(|e| ("tls_cert_file".to_owned(), e))?;
    let key_file = &tls.key_file;
    let key = std::fs::File::open(key_file)
        .map_err(|e| format!("cannot read {key_file}: {e}"))
        .and_then(|file| {
            rustls_pemfile::private_key(&mut BufReader::new(file)).map_err(|e| format!("{key_file}: not PEM: {e}"))
        })
        .and_then(|key| key.ok_or_else(|| format!("{key_file}: no PEM private key in it")))
        .map_err(|e| ("tls_key_file".to_owned(), e))?;
    let client_roots = match &tls.client_ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in device_certs(ca_file).map_err(|e| ("tls_client_ca_file".to_owned(), e))? {
                roots
                    .add(cert)
                    .map_err(|e| ("tls_client_ca_file".to_owned(), format!("{ca_file}: not a usable CA: {e}")))?;
            }
            Some(roots)
        }
        None => None,
    };
    Ok(DeviceFiles { certs, key, client_roots })
}

/// The error of a device certificate and key that do not go together.
pub fn device_key_mismatch(tls: &DeviceTls, err: &rustls::Error) -> (String, String) {
    ("tls_key_file".to_owned(), format!("{} does not go with {}: {err}", tls.key_file, tls.cert_file))
}

/// Checks the device listener's files as the server configuration will use them: readable,
/// PEM, a usable client CA, and a key that goes with the certificate.
pub fn check_device_tls(tls: &DeviceTls) -> Result<(), (String, String)> {
    let files = load_device_tls(tls)?;
    CertifiedKey::from_der(files.certs, files.key, &provider()).map_err(|e| device_key_mismatch(tls, &e))?;
    Ok(())
}
