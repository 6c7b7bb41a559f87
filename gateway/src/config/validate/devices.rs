//! `[devices]`: embedded broker (listeners, `[devices.auth]`, device TLS files) or client
//! of an external broker.

use std::net::SocketAddr;

use super::*;

pub(super) fn validate_devices(
    errors: &mut Errors,
    raw: raw::Devices,
    link: raw::Link,
    gateway_id: &str,
    secret_files: &mut Vec<SecretFile>,
) -> DevicesConfig {
    let max_payload = size(errors, "devices.max_payload", raw.max_payload.as_ref(), 16 * 1024);
    if !(256..=(16 << 20)).contains(&max_payload.bytes()) {
        errors.push("devices.max_payload", format!("expected from 256B to 16MiB, found {max_payload}"));
    }
    let mode = match raw.mode.as_deref().unwrap_or("embedded") {
        "embedded" => {
            if raw.url.is_some() {
                errors.push("devices.url", "only used with mode = \"external\"");
            }
            for key in link.keys_set() {
                errors.push(format!("devices.{key}"), "only used with mode = \"external\"");
            }
            let listen = socket(errors, "devices.listen", raw.listen.as_deref(), "0.0.0.0:1883");
            let listen_v5 =
                raw.listen_v5.as_deref().and_then(|text| socket(errors, "devices.listen_v5", Some(text), ""));
            if listen_v5.is_some() && listen_v5 == listen {
                errors.push("devices.listen_v5", "must differ from devices.listen");
            }
            let max_connections =
                count(errors, "devices.max_connections", raw.max_connections, 1000, 1, 100_000) as usize;
            let broker_memory = size(errors, "devices.broker_memory", raw.broker_memory.as_ref(), 2 << 20);
            if broker_memory.bytes() < 1 << 20 {
                errors.push("devices.broker_memory", format!("expected at least 1MiB, found {broker_memory}"));
            }
            DevicesMode::Embedded {
                listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 1883))),
                listen_v5,
                max_connections,
                broker_memory,
                access: validate_device_auth(errors, raw.auth.unwrap_or_default()),
                tls: validate_device_tls(
                    errors,
                    raw.tls_cert_file.as_deref(),
                    raw.tls_key_file.as_deref(),
                    raw.tls_client_ca_file.as_deref(),
                ),
            }
        }
        "external" => {
            if raw.listen.is_some() || raw.listen_v5.is_some() {
                errors.push("devices.listen", "only used with mode = \"embedded\"; set devices.url");
            }
            let embedded_only = [
                ("tls_cert_file", raw.tls_cert_file.is_some()),
                ("tls_key_file", raw.tls_key_file.is_some()),
                ("tls_client_ca_file", raw.tls_client_ca_file.is_some()),
                ("auth", raw.auth.is_some()),
            ];
            for (key, _) in embedded_only.iter().filter(|(_, set)| *set) {
                errors.push(
                    format!("devices.{key}"),
                    "only used with mode = \"embedded\"; with mode = \"external\" the broker you run does its own \
                     authentication and TLS",
                );
            }
            let url = match raw.url.as_deref() {
                Some(url) => errors.take("devices.url", BrokerUrl::parse(url)),
                None => {
                    errors.push("devices.url", "required with mode = \"external\" (e.g. \"mqtt://127.0.0.1:1883\")");
                    None
                }
            };
            let client_id = match raw.client_id {
                Some(id) => {
                    check_id(errors, "devices.client_id", &id);
                    id
                }
                None => format!("{gateway_id}-ingest"),
            };
            let url = url.unwrap_or(BrokerUrl::plain("127.0.0.1", 1883));
            let security = super::links::validate_link(errors, "devices", &url, link, secret_files);
            DevicesMode::External { url, client_id, security }
        }
        other => {
            errors.push("devices.mode", format!("expected \"embedded\" or \"external\", found {other:?}"));
            DevicesMode::Embedded {
                listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
                listen_v5: None,
                max_connections: 1,
                broker_memory: ByteSize(0),
                access: Access::Users(Default::default()),
                tls: None,
            }
        }
    };
    let unrouted = choice(
        errors,
        "devices.unrouted",
        raw.unrouted.as_deref(),
        &[("count", Unrouted::Count), ("dead_letter", Unrouted::DeadLetter)],
    );
    DevicesConfig { mode, max_payload, unrouted }
}

/// `[devices.auth]`: named users (config and/or file), or anonymous access. Saying nothing
/// means named users only, and none are listed: every device is refused (and the gateway
/// says so at start), never "anyone may connect".
fn validate_device_auth(errors: &mut Errors, raw: raw::DevicesAuth) -> Access {
    let mut users = Users::new();
    for (name, hash) in raw.users.iter().flatten() {
        if let Err(e) = users.add(name, hash) {
            errors.push(format!("devices.auth.users.{name}"), e);
        }
    }
    if let Some(path) = raw.users_file.as_deref() {
        if let Err(list) = users.add_file(path) {
            for e in list {
                errors.push("devices.auth.users_file", e);
            }
        }
    }
    if raw.allow_anonymous == Some(true) {
        if raw.users.is_some() || raw.users_file.is_some() {
            errors.push(
                "devices.auth.allow_anonymous",
                "cannot be combined with users or users_file: anonymous clients would get rights that named devices \
                 do not; choose one",
            );
        }
        return Access::Anonymous;
    }
    Access::Users(users)
}

/// `tls_cert_file` + `tls_key_file` (+ `tls_client_ca_file`): checked now, so that a bad file
/// is a config error naming the key, not a failure at start or at the first device.
fn validate_device_tls(
    errors: &mut Errors,
    cert: Option<&str>,
    key: Option<&str>,
    client_ca: Option<&str>,
) -> Option<DeviceTls> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let tls = DeviceTls {
                cert_file: cert.to_owned(),
                key_file: key.to_owned(),
                client_ca_file: client_ca.map(str::to_owned),
            };
            match files::check_device_tls(&tls) {
                Ok(()) => Some(tls),
                Err((field, message)) => {
                    errors.push(format!("devices.{field}"), message);
                    None
                }
            }
        }
        (Some(_), None) => {
            errors.push("devices.tls_key_file", "required with devices.tls_cert_file");
            None
        }
        (None, Some(_)) => {
            errors.push("devices.tls_cert_file", "required with devices.tls_key_file");
            None
        }
        (None, None) => {
            if client_ca.is_some() {
                errors.push(
                    "devices.tls_client_ca_file",
                    "needs devices.tls_cert_file and devices.tls_key_file (client certificates are checked over TLS)",
                );
            }
            None
        }
    }
}
