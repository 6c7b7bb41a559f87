//! Security of the MQTT links the gateway dials (the cloud; an external device broker):
//! rustls with the `ring` provider, a `ClientConfig` built here and handed to rumqttc, and
//! MQTT credentials. One helper, [`mqtt_options`], builds the options of both links.
//!
//! Invariants:
//! - The same loading code ([`crate::config::files`]) runs at config load (so
//!   `check-config` finds a bad file) and at every connect ([`client_config`], so a renewed
//!   certificate is picked up without a restart, and a file that went bad is a clear link
//!   error, not a crash). The client configuration is built here only.
//! - Errors name the key path and the file, never their contents: no password, no key
//!   bytes, no PEM text ever reaches a message. A connect failure is turned into a sentence
//!   that says which side refused what ([`describe`]).
//! - `insecure_skip_verify` accepts any server certificate but still checks the handshake
//!   signatures; it is logged as a warning by the callers at start and on every connect.

use std::path::Path;
use std::sync::Arc;

use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, TlsConfiguration, Transport};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

pub use crate::config::files::TlsFileError;
use crate::config::files::{self, identity, provider, roots, server_name};
use crate::config::{BrokerUrl, LinkSecurity, TlsSettings};

fn fail(settings: &TlsSettings, key: &str, message: String) -> TlsFileError {
    TlsFileError { key: format!("{}.{key}", settings.section), message }
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// Builds the rustls client configuration: trusted roots (`ca_file` or the system's),
/// optional client certificate, ALPN, server name override or no verification at all.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsFileError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let inner = if settings.insecure_skip_verify {
        None
    } else {
        let roots = Arc::new(roots(settings)?);
        Some(
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| fail(settings, "ca_file", format!("no usable CA certificate: {e}")))?,
        )
    };
    let name = settings.server_name.as_deref().map(|name| server_name(settings, name)).transpose()?;
    let verifier = Arc::new(Verifier { inner, name, algorithms });
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(settings, "url", format!("no TLS version available: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &settings.client {
        Some(client) => {
            let (certs, key) = identity(settings, client, &provider)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| files::unusable_identity(settings, client, &e))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = settings.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// MQTT options for a link: host and port, TLS when the URL is `mqtts://`, credentials.
/// The caller sets the session and flow-control options.
pub fn mqtt_options(client_id: &str, url: &BrokerUrl, security: &LinkSecurity) -> Result<MqttOptions, TlsFileError> {
    let mut options = MqttOptions::new(client_id, url.host.clone(), url.port);
    if let Some(tls) = &security.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(client_config(tls)?)));
    }
    if let Some(username) = &security.username {
        let password = security.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
        options.set_credentials(username.clone(), password);
    }
    Ok(options)
}

/// Server certificate check: webpki against the roots, for `server_name` when set instead
/// of the URL's host; or nothing at all (`insecure_skip_verify`), handshake signatures
/// being checked either way.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    name: Option<ServerName<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.inner {
            Some(inner) => {
                let name = self.name.as_ref().unwrap_or(server_name);
                inner.verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            }
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The first rustls error in an error's chain (rumqttc and tokio-rustls wrap it in
/// `io::Error`s, whose `source()` skips the wrapped error itself).
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// A connect or link failure as a sentence for the log and `/api/status`: who refused
/// what, and which key or file to look at. `peer` is e.g. "the cloud broker".
pub fn describe(err: &ConnectionError, peer: &str, security: &LinkSecurity) -> String {
    let section = security.section;
    if let ConnectionError::ConnectionRefused(code) = err {
        return match code {
            ConnectReturnCode::BadUserNamePassword => {
                format!("{peer} refused the connection: bad user name or password (check {section}.username and the password)")
            }
            ConnectReturnCode::NotAuthorized if security.username.is_none() => {
                format!("{peer} refused the connection: not authorized (it may want {section}.username and a password)")
            }
            ConnectReturnCode::NotAuthorized => format!(
                "{peer} refused the connection: not authorized (check {section}.username and the password, and the broker's ACL)"
            ),
            other => format!("{peer} refused the connection: {other:?}"),
        };
    }
    if let ConnectionError::Tls(rumqttc::TlsError::DNSName(_)) = err {
        return format!("the URL's host is not a valid TLS server name; set {section}.server_name");
    }
    match (rustls_error(err), &security.tls) {
        (Some(tls_err), Some(tls)) => describe_tls(tls_err, peer, tls),
        _ => err.to_string(),
    }
}

/// `DnsName("a.example")` (how rustls lists a certificate's names) as `a.example`.
fn plain_name(presented: &str) -> &str {
    presented
        .split_once("(\"")
        .and_then(|(_, rest)| rest.strip_suffix("\")"))
        .or_else(|| presented.split_once('(').and_then(|(_, rest)| rest.strip_suffix(')')))
        .unwrap_or(presented)
}

fn describe_tls(err: &rustls::Error, peer: &str, tls: &TlsSettings) -> String {
    let section = tls.section;
    let trusted = match &tls.ca_file {
        Some(path) => format!("the CA in {section}.ca_file ({})", show(path)),
        None => "the system's CA certificates".to_owned(),
    };
    let client = tls.client.as_ref();
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                format!("TLS: {peer}'s certificate is not signed by {trusted} (unknown CA); set {section}.ca_file to the CA that signed it")
            }
            CertificateError::Expired => format!("TLS: {peer}'s certificate has expired"),
            CertificateError::ExpiredContext { not_after, .. } => format!(
                "TLS: {peer}'s certificate has expired (valid until {}); the broker must renew it",
                crate::time::format_time(not_after.as_secs() as i64 * 1000)
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("TLS: {peer}'s certificate is not valid yet (is this machine's clock right?)")
            }
            CertificateError::NotValidForName => {
                format!("TLS: {peer}'s certificate is not valid for the host name; set {section}.server_name or fix {section}.url")
            }
            CertificateError::NotValidForNameContext { expected, presented } => format!(
                "TLS: {peer}'s certificate is not valid for {:?} (wrong host name; it is for {}); connect by a name it names or set {section}.server_name",
                expected.to_str(),
                if presented.is_empty() { "no names".to_owned() } else { presented.iter().map(|n| plain_name(n)).collect::<Vec<_>>().join(", ") }
            ),
            other => format!("TLS: {peer}'s certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => match (alert, client) {
            (
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
                | AlertDescription::DecryptError,
                Some(client),
            ) => format!(
                "TLS: {peer} refused our client certificate {} ({section}.cert_file; alert {alert:?}): is it signed by a CA the broker trusts?",
                show(&client.cert_file)
            ),
            (AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure, Some(client)) => format!(
                "TLS: {peer} refused the handshake with our client certificate {} ({section}.cert_file; alert {alert:?})",
                show(&client.cert_file)
            ),
            (
                AlertDescription::CertificateRequired
                | AlertDescription::HandshakeFailure
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::AccessDenied,
                None,
            ) => format!(
                "TLS: {peer} wants a client certificate (alert {alert:?}); set {section}.cert_file and {section}.key_file"
            ),
            (AlertDescription::NoApplicationProtocol, _) => {
                format!("TLS: {peer} accepts none of the ALPN protocols {:?} ({section}.alpn)", tls.alpn)
            }
            (other, _) => format!("TLS: {peer} sent alert {other:?}"),
        },
        rustls::Error::InvalidMessage(_) => {
            format!("TLS: {peer} did not answer with TLS ({err}); is the port a TLS listener, or should the URL be mqtt://?")
        }
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientCert, Secret};

    fn security(section: &'static str, tls: Option<TlsSettings>) -> LinkSecurity {
        LinkSecurity { section, tls, username: Some("u".into()), password: Some(Secret::new("hunter2-pw".into())) }
    }

    fn settings(section: &'static str) -> TlsSettings {
        TlsSettings {
            section,
            ca_file: Some("/etc/ca.pem".into()),
            client: Some(ClientCert { cert_file: "/etc/gw.crt".into(), key_file: "/etc/gw.key".into() }),
            alpn: vec![],
            server_name: None,
            insecure_skip_verify: false,
        }
    }

    #[test]
    fn refusals_name_the_section_and_the_file_but_never_the_password() {
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        let text = describe(&refused, "the device broker", &security("devices", None));
        assert_eq!(
            text,
            "the device broker refused the connection: bad user name or password (check devices.username and the password)"
        );
        let tls = settings("cloud");
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let text = describe(&ConnectionError::Io(alert), "the cloud broker", &security("cloud", Some(tls)));
        assert!(
            text.starts_with("TLS: the cloud broker refused our client certificate /etc/gw.crt (cloud.cert_file"),
            "{text}"
        );
        assert!(!text.contains("hunter2"));
        let unknown = rumqttc::TlsError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        let text =
            describe(&ConnectionError::Tls(unknown), "the cloud broker", &security("cloud", Some(settings("cloud"))));
        assert!(text.contains("not signed by the CA in cloud.ca_file (/etc/ca.pem)"), "{text}");
    }

    #[test]
    fn settings_the_config_accepts_build_a_client_config() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        std::fs::write(path("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["gw-01".to_string()]).unwrap();
        std::fs::write(path("client.pem"), client.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(path("client.key"), key.serialize_pem()).unwrap();
        let text = format!(
            "[cloud]\nurl = \"mqtts://127.0.0.1\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             alpn = [\"x-amzn-mqtt-ca\"]\nserver_name = \"cloud.example\"\n\
             [[routes]]\nname = \"r\"\nfrom = \"devices/+/events\"\nto = \"t\"\n",
            path("ca.pem"),
            path("client.pem"),
            path("client.key")
        );
        let config = crate::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e:#?}"));
        let tls = config.cloud.security.tls.as_ref().unwrap();
        // The same settings build a working rustls config (as every connect does).
        assert!(client_config(tls).is_ok());
    }

    #[test]
    fn certificate_names_are_shown_plainly() {
        assert_eq!(plain_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(plain_name("odd"), "odd");
    }
}
