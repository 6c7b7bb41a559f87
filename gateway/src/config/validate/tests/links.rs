//! TLS and credential keys of the links the gateway dials, with real certificate files.

use super::*;

/// Certificates for the TLS keys, written to a temp dir: a CA, a client certificate it
/// signed with its key, an expired one, and a key that belongs to neither.
pub(super) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(super) fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        write("ca.pem", &ca.self_signed(&ca_key).unwrap().pem());
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["gw-01".to_string()]).unwrap();
        write("client.pem", &client.signed_by(&key, &issuer).unwrap().pem());
        write("client.key", &key.serialize_pem());
        let mut expired = CertificateParams::new(vec!["gw-01".to_string()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
        write("expired.pem", &expired.signed_by(&key, &issuer).unwrap().pem());
        write("other.key", &KeyPair::generate().unwrap().serialize_pem());
        write("password.txt", "s3cret-pass\n");
        write("not-pem.txt", "hello\n");
        Pki { dir }
    }

    pub(super) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A config with `url` and `keys` in `[cloud]`.
    pub(super) fn cloud(&self, url: &str, keys: &str) -> String {
        format!("[cloud]\nurl = \"{url}\"\n{keys}\n{ROUTE}")
    }
}

#[test]
fn mutual_tls_with_a_password_file_parses_and_lists_the_secret_files() {
    let pki = Pki::new();
    let text = pki.cloud(
        "mqtts://127.0.0.1",
        &format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nusername = \"gw\"\npassword_file = \"{}\"\n\
             alpn = [\"x-amzn-mqtt-ca\"]\nserver_name = \"cloud.example\"\n",
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key"),
            pki.path("password.txt")
        ),
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(config.cloud.url, BrokerUrl { host: "127.0.0.1".into(), port: 8883, tls: true });
    let tls = config.cloud.security.tls.as_ref().unwrap();
    assert_eq!(tls.alpn, vec!["x-amzn-mqtt-ca".to_string()]);
    assert_eq!(tls.server_name.as_deref(), Some("cloud.example"));
    assert!(!tls.insecure_skip_verify);
    assert_eq!(config.cloud.security.password.as_ref().map(Secret::expose), Some("s3cret-pass"));
    let keys: Vec<(&str, bool)> = config.secret_files.iter().map(|f| (f.key.as_str(), f.private_key)).collect();
    assert_eq!(keys, vec![("cloud.password_file", false), ("cloud.key_file", true)]);
    assert!(!format!("{config:?}").contains("s3cret-pass"), "Debug shows no password");
    assert!(config.summary().contains("mqtts://127.0.0.1:8883 (mutual TLS)"), "{}", config.summary());
    // That the same settings build a working rustls config is checked where it is built
    // (`tls.rs`, `settings_the_config_accepts_build_a_client_config`).
}

#[test]
fn tls_keys_with_an_mqtt_url_are_errors_at_their_key_paths() {
    let errors = errors_of(&format!(
        "[cloud]\nurl = \"mqtt://h\"\nca_file = \"x\"\ncert_file = \"c\"\nkey_file = \"k\"\nalpn = [\"a\"]\n\
         server_name = \"s\"\ninsecure_skip_verify = true\n{ROUTE}"
    ));
    for key in ["ca_file", "cert_file", "key_file", "alpn", "server_name", "insecure_skip_verify"] {
        let prefix = format!("cloud.{key}: only used with an mqtts:// URL");
        assert!(errors.iter().any(|e| e.starts_with(&prefix)), "missing {prefix:?} in {errors:#?}");
    }
    assert_eq!(errors.len(), 6, "{errors:#?}");
    // `false` is the default and harmless.
    assert!(parse(&format!("[cloud]\nurl = \"mqtt://h\"\ninsecure_skip_verify = false\n{ROUTE}")).is_ok());
}

#[test]
fn client_certificate_needs_cert_and_key_together() {
    let pki = Pki::new();
    let errors = errors_of(&pki.cloud(
        "mqtts://h",
        &format!("ca_file = \"{}\"\ncert_file = \"{}\"\n", pki.path("ca.pem"), pki.path("client.pem")),
    ));
    assert_eq!(errors, vec!["cloud.key_file: required with cloud.cert_file (mutual TLS needs both)"]);
    let errors = errors_of(&pki.cloud(
        "mqtts://h",
        &format!("ca_file = \"{}\"\nkey_file = \"{}\"\n", pki.path("ca.pem"), pki.path("client.key")),
    ));
    assert_eq!(errors, vec!["cloud.cert_file: required with cloud.key_file (mutual TLS needs both)"]);
}

#[test]
fn unreadable_or_wrong_tls_files_are_errors_naming_key_and_file() {
    let pki = Pki::new();
    let missing = pki.path("missing.pem");
    let errors = errors_of(&pki.cloud("mqtts://h", &format!("ca_file = \"{missing}\"\n")));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with(&format!("cloud.ca_file: cannot read {missing}: ")), "{errors:#?}");

    let not_pem = pki.path("not-pem.txt");
    let errors = errors_of(&pki.cloud(
        "mqtts://h",
        &format!(
            "ca_file = \"{not_pem}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.path("client.pem"),
            pki.path("ca.pem")
        ),
    ));
    assert!(
        errors.contains(&format!("cloud.ca_file: {not_pem}: no PEM certificate (BEGIN CERTIFICATE) in it")),
        "{errors:#?}"
    );
    let no_key = format!("cloud.key_file: {}: no private key in it", pki.path("ca.pem"));
    assert!(errors.iter().any(|e| e.starts_with(&no_key)), "{errors:#?}");
}

#[test]
fn an_expired_client_certificate_is_an_error_naming_the_file() {
    let pki = Pki::new();
    let expired = pki.path("expired.pem");
    let errors = errors_of(&pki.cloud(
        "mqtts://h",
        &format!(
            "ca_file = \"{}\"\ncert_file = \"{expired}\"\nkey_file = \"{}\"\n",
            pki.path("ca.pem"),
            pki.path("client.key")
        ),
    ));
    assert_eq!(
        errors,
        vec![format!("cloud.cert_file: {expired}: the certificate expired at 2021-01-01 00:00:00Z; renew it")]
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_an_error() {
    let pki = Pki::new();
    let other = pki.path("other.key");
    let errors = errors_of(&pki.cloud(
        "mqtts://h",
        &format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{other}\"\n",
            pki.path("ca.pem"),
            pki.path("client.pem")
        ),
    ));
    assert_eq!(
        errors,
        vec![format!(
            "cloud.key_file: {other} is not the key of the certificate in {} (their public keys differ)",
            pki.path("client.pem")
        )]
    );
}

#[test]
fn password_sources_are_exclusive_need_a_user_and_must_exist() {
    let pki = Pki::new();
    let errors = errors_of(&pki.cloud(
        "mqtt://h",
        &format!("username = \"u\"\npassword = \"p\"\npassword_file = \"{}\"\n", pki.path("password.txt")),
    ));
    assert_eq!(
        errors,
        vec!["cloud.password: set at most one of cloud.password, cloud.password_env, cloud.password_file"]
    );
    let errors = errors_of(&pki.cloud("mqtt://h", "password = \"p\"\n"));
    assert_eq!(errors, vec!["cloud.username: required with a password (MQTT sends a password only with a user name)"]);
    let errors = errors_of(&pki.cloud("mqtt://h", "username = \"u\"\npassword_env = \"EDGE_TEST_SURELY_UNSET_VAR\"\n"));
    assert_eq!(errors, vec!["cloud.password_env: environment variable EDGE_TEST_SURELY_UNSET_VAR is not set"]);
    let missing = pki.path("nope.txt");
    let errors = errors_of(&pki.cloud("mqtt://h", &format!("username = \"u\"\npassword_file = \"{missing}\"\n")));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with(&format!("cloud.password_file: cannot read {missing}")), "{errors:#?}");
    let errors = errors_of(&pki.cloud("mqtt://h", "username = \"\"\npassword = \"\"\n"));
    assert_eq!(errors, vec!["cloud.password: is empty", "cloud.username: is empty"]);
}

#[test]
fn server_name_and_alpn_are_checked() {
    let pki = Pki::new();
    let errors = errors_of(&pki.cloud(
        "mqtts://h",
        &format!("ca_file = \"{}\"\nserver_name = \"not a name!\"\nalpn = [\"\"]\n", pki.path("ca.pem")),
    ));
    assert!(errors.contains(&"cloud.alpn[0]: an ALPN protocol name is 1-255 bytes".to_string()), "{errors:#?}");
    assert!(
        errors.contains(&"cloud.server_name: \"not a name!\" is not a DNS name or an IP address".to_string()),
        "{errors:#?}"
    );
}

#[test]
fn the_device_broker_link_takes_the_same_keys_in_external_mode_only() {
    let pki = Pki::new();
    let errors = errors_of(&format!("[devices]\nca_file = \"{}\"\nusername = \"u\"\n{ROUTE}", pki.path("ca.pem")));
    assert_eq!(errors, vec!["devices.ca_file: only used with mode = \"external\""]);
    let config = parse(&format!(
        "[devices]\nmode = \"external\"\nurl = \"mqtts://127.0.0.1\"\nca_file = \"{}\"\nusername = \"u\"\npassword = \"p\"\n{ROUTE}",
        pki.path("ca.pem")
    ))
    .unwrap_or_else(|e| panic!("{e:#?}"));
    let DevicesMode::External { url, security, .. } = &config.devices.mode else { panic!("external") };
    assert_eq!(url.port, 8883);
    assert_eq!(security.tls.as_ref().map(|t| t.section), Some("devices"));
    let errors = errors_of(&format!(
        "[devices]\nmode = \"external\"\nurl = \"mqtt://127.0.0.1\"\nca_file = \"{}\"\n{ROUTE}",
        pki.path("ca.pem")
    ));
    assert_eq!(errors, vec!["devices.ca_file: only used with an mqtts:// URL (devices.url is mqtt://)"]);
}
