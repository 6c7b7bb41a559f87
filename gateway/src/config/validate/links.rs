//! `[cloud]`, and the TLS and credential keys of every link the gateway dials (`[cloud]`,
//! external `[devices]`).

use std::path::PathBuf;
use std::time::Duration;

use super::*;

pub(super) fn validate_cloud(
    errors: &mut Errors,
    raw: raw::Cloud,
    link: raw::Link,
    gateway_id: &str,
    secret_files: &mut Vec<SecretFile>,
) -> CloudConfig {
    let url = raw.url.as_deref().unwrap_or("mqtt://127.0.0.1:1884");
    let url = errors.take("cloud.url", BrokerUrl::parse(url));
    // A broken URL: judge the TLS keys as if it said what they imply, so they are checked too.
    let url = url.unwrap_or(BrokerUrl { host: String::new(), port: 0, tls: link.keys_set().next().is_some() });
    let security = validate_link(errors, "cloud", &url, link, secret_files);
    let client_id = match raw.client_id {
        Some(id) => {
            check_id(errors, "cloud.client_id", &id);
            id
        }
        None => gateway_id.to_owned(),
    };
    let max_packet_size = size(errors, "cloud.max_packet_size", raw.max_packet_size.as_ref(), 128 * 1024);
    if !(MIN_BATCH_BYTES + 1024..=256 << 20).contains(&max_packet_size.bytes()) {
        errors.push("cloud.max_packet_size", format!("expected from 5KiB to 256MiB, found {max_packet_size}"));
    }
    let backoff_min = duration(errors, "cloud.backoff_min", raw.backoff_min.as_ref(), Duration::from_millis(200));
    let backoff_max = duration(errors, "cloud.backoff_max", raw.backoff_max.as_ref(), Duration::from_secs(30));
    if backoff_min.is_zero() {
        errors.push("cloud.backoff_min", "must be more than 0");
    }
    if backoff_max < backoff_min {
        errors.push("cloud.backoff_max", format!("must be at least cloud.backoff_min ({backoff_min:?})"));
    }
    let keep_alive = duration(errors, "cloud.keep_alive", raw.keep_alive.as_ref(), Duration::from_secs(30));
    if keep_alive < Duration::from_secs(1) {
        errors.push("cloud.keep_alive", "expected at least 1s");
    }
    CloudConfig {
        url,
        security,
        client_id,
        keep_alive,
        max_packet_size,
        max_inflight: count(errors, "cloud.max_inflight", raw.max_inflight, 16, 1, 1000) as usize,
        connect_timeout: duration(
            errors,
            "cloud.connect_timeout",
            raw.connect_timeout.as_ref(),
            Duration::from_secs(10),
        ),
        backoff_min,
        backoff_max,
        shutdown_timeout: duration(
            errors,
            "cloud.shutdown_timeout",
            raw.shutdown_timeout.as_ref(),
            Duration::from_secs(5),
        ),
    }
}

/// The TLS and credential keys of a link the gateway dials (`[cloud]`, external
/// `[devices]`): what goes together, and every file readable and usable.
pub(super) fn validate_link(
    errors: &mut Errors,
    section: &'static str,
    url: &BrokerUrl,
    link: raw::Link,
    secret_files: &mut Vec<SecretFile>,
) -> LinkSecurity {
    let at = |key: &str| format!("{section}.{key}");
    let tls_keys: Vec<&str> = link.keys_set().collect();
    let password = match (link.password, link.password_env, link.password_file) {
        (None, None, None) => None,
        (Some(password), None, None) if password.expose().is_empty() => {
            errors.push(at("password"), "is empty");
            None
        }
        (Some(password), None, None) => Some(password),
        (None, Some(name), None) => errors.take(&at("password_env"), Secret::from_env(&name)),
        (None, None, Some(path)) => {
            secret_files.push(SecretFile { key: at("password_file"), path: path.clone().into(), private_key: false });
            errors.take(&at("password_file"), Secret::from_file(&path))
        }
        _ => {
            errors.push(
                at("password"),
                format!("set at most one of {0}.password, {0}.password_env, {0}.password_file", section),
            );
            None
        }
    };
    if link.username.as_deref() == Some("") {
        errors.push(at("username"), "is empty");
    }
    if password.is_some() && link.username.is_none() {
        errors.push(at("username"), "required with a password (MQTT sends a password only with a user name)");
    }
    let security = LinkSecurity { section, tls: None, username: link.username.clone(), password };
    if !url.tls {
        for key in tls_keys {
            errors.push(at(key), format!("only used with an mqtts:// URL ({section}.url is mqtt://)"));
        }
        return security;
    }
    let client = match (link.cert_file, link.key_file) {
        (Some(cert_file), Some(key_file)) => {
            Some(ClientCert { cert_file: cert_file.into(), key_file: key_file.into() })
        }
        (Some(_), None) => {
            errors.push(at("key_file"), format!("required with {section}.cert_file (mutual TLS needs both)"));
            None
        }
        (None, Some(_)) => {
            errors.push(at("cert_file"), format!("required with {section}.key_file (mutual TLS needs both)"));
            None
        }
        (None, None) => None,
    };
    if let Some(client) = &client {
        secret_files.push(SecretFile { key: at("key_file"), path: client.key_file.clone(), private_key: true });
    }
    let alpn = link.alpn.unwrap_or_default();
    for (n, protocol) in alpn.iter().enumerate() {
        if protocol.is_empty() || protocol.len() > 255 {
            errors.push(format!("{section}.alpn[{n}]"), "an ALPN protocol name is 1-255 bytes");
        }
    }
    let settings = TlsSettings {
        section,
        ca_file: link.ca_file.map(PathBuf::from),
        client,
        alpn,
        server_name: link.server_name,
        insecure_skip_verify: link.insecure_skip_verify.unwrap_or(false),
    };
    for err in files::check_link(&settings) {
        errors.push(err.key, err.message);
    }
    LinkSecurity { tls: Some(settings), ..security }
}
