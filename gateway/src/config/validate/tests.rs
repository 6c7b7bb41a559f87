use super::*;

const DEFAULT: &str = include_str!("../../../../config/gateway.toml");

fn errors_of(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_shipped_default_config_is_valid() {
    let config = parse(DEFAULT).expect("config/gateway.toml must be valid");
    assert_eq!(config.gateway.id, "gw-01");
    assert_eq!(config.cloud.url, BrokerUrl::plain("127.0.0.1", 1884));
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].from.mqtt_filter(), "devices/+/events");
    assert!(matches!(config.devices.mode, DevicesMode::Embedded { listen, .. } if listen.port() == 1883));
}

#[test]
fn a_minimal_config_gets_small_box_defaults() {
    let config = parse("[[routes]]\nname = \"t\"\nfrom = \"devices/+/events\"\nto = \"x/{gateway}\"\n").unwrap();
    assert_eq!(config.store.max_bytes, ByteSize(1 << 30));
    assert_eq!(config.store.when_full, WhenFull::DropOldest);
    assert_eq!(config.store.synchronous, Synchronous::Full);
    assert_eq!(config.routes[0].batch.max_events, 500);
    assert_eq!(config.routes[0].batch.max_delay, Duration::from_millis(200));
    assert_eq!(config.http.listen, Some("127.0.0.1:9464".parse().unwrap()));
}

#[test]
fn every_error_is_reported_at_once_with_its_key_path() {
    let text = r#"
[gateway]
id = "gw 01"
[store]
max_bytes = "64kb"
when_full = "drop_newest"
[cloud]
url = "http://cloud"
[[routes]]
name = "a"
from = "devices/+/events"
to = "t/{gateway}"
[[routes]]
name = "a"
from = "devices/#/events"
to = "t/{nope}"
batch = { max_bytes = "64kb", max_delay = "soon" }
"#;
    let errors = errors_of(text);
    let expect = [
        "gateway.id: expected 1-64 characters",
        "store.max_bytes: expected a size like \"64KiB\" or \"1GiB\", found \"64kb\"",
        "store.when_full: expected one of \"drop_oldest\", \"reject_new\", found \"drop_newest\"",
        "cloud.url: expected a URL like",
        "routes[1].name: route name \"a\" is used twice",
        "routes[1].from: `#` must be the last level",
        "routes[1].to: unknown placeholder {nope}",
        "routes[1].batch.max_bytes: expected a size like",
        "routes[1].batch.max_delay: expected a duration like",
    ];
    for prefix in expect {
        assert!(errors.iter().any(|e| e.starts_with(prefix)), "missing {prefix:?} in {errors:#?}");
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn unknown_keys_are_refused_in_every_section_at_once() {
    let errors = errors_of(
        "[gateway]\nidd = \"x\"\n[store]\nmax_byte = 1\n[[routes]]\nname = \"r\"\nfrom = \"devices/+/events\"\nto = \"t\"\nbatch = { max_event = 1 }\n[extra]\n",
    );
    assert!(errors.iter().any(|e| e.starts_with("gateway.idd: unknown field `idd`")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("store.max_byte: unknown field `max_byte`")), "{errors:#?}");
    assert!(
        errors.iter().any(|e| e.starts_with("routes[0].batch.max_event: unknown field `max_event`")),
        "{errors:#?}"
    );
    assert!(errors.iter().any(|e| e.starts_with("extra: unknown section")), "{errors:#?}");
    assert_eq!(errors.len(), 4, "a broken route is not also reported as missing its keys: {errors:#?}");
}

#[test]
fn wrong_types_name_the_key() {
    let errors = errors_of(
        "[cloud]\nmax_inflight = \"many\"\n[[routes]]\nname = \"r\"\nfrom = \"devices/+/events\"\nto = \"t\"\n",
    );
    assert!(errors.iter().any(|e| e.starts_with("cloud.max_inflight: invalid type")), "{errors:#?}");
}

#[test]
fn a_batch_larger_than_the_cloud_packet_limit_is_refused() {
    let errors = errors_of(
        "[cloud]\nmax_packet_size = \"64KiB\"\n[[routes]]\nname = \"r\"\nfrom = \"devices/+/events\"\nto = \"t\"\nbatch = { max_bytes = \"64KiB\" }\n",
    );
    assert!(
        errors.iter().any(|e| e.starts_with("routes[0].batch.max_bytes: expected from 4KiB to cloud.max_packet_size")),
        "{errors:#?}"
    );
}

#[test]
fn external_mode_needs_a_url_and_no_listen() {
    let errors = errors_of("[devices]\nmode = \"external\"\nlisten = \"0.0.0.0:1\"\n[[routes]]\nname = \"r\"\nfrom = \"devices/+/events\"\nto = \"t\"\n");
    assert!(errors.iter().any(|e| e.starts_with("devices.url: required")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("devices.listen: only used")), "{errors:#?}");
}

#[test]
fn no_routes_is_an_error_and_broken_toml_names_the_line() {
    assert!(errors_of("").iter().any(|e| e.starts_with("routes: at least one")));
    let errors = errors_of("[gateway]\nid = \n");
    assert!(errors[0].starts_with("(file): not valid TOML (line 2)"), "{errors:#?}");
}

#[test]
fn broker_urls_parse_with_and_without_port() {
    assert_eq!(BrokerUrl::parse("mqtt://h:1"), Ok(BrokerUrl::plain("h", 1)));
    assert_eq!(BrokerUrl::parse("mqtt://h"), Ok(BrokerUrl::plain("h", 1883)));
    assert_eq!(BrokerUrl::parse("mqtt://[::1]:9"), Ok(BrokerUrl::plain("::1", 9)));
    assert_eq!(BrokerUrl::parse("mqtts://h"), Ok(BrokerUrl { host: "h".into(), port: 8883, tls: true }));
    assert_eq!(BrokerUrl::parse("mqtts://h:443"), Ok(BrokerUrl { host: "h".into(), port: 443, tls: true }));
    assert_eq!(BrokerUrl::parse("mqtts://h:443").unwrap().to_string(), "mqtts://h:443");
    assert_eq!(BrokerUrl::parse("mqtt://[::1]:9").unwrap().to_string(), "mqtt://[::1]:9");
    assert!(BrokerUrl::parse("ssl://h").unwrap_err().contains("mqtts://host:8883"));
    assert!(BrokerUrl::parse("mqtt://h:x").is_err());
    assert!(BrokerUrl::parse("mqtt://").is_err());
}

#[test]
fn log_settings_are_checked_and_default_to_quiet_broker_logs() {
    let route = "[[routes]]\nname = \"r\"\nfrom = \"devices/+/events\"\nto = \"t\"\n";
    let config = parse(route).unwrap();
    assert_eq!(config.log.filter, DEFAULT_LOG_FILTER);
    assert_eq!(config.log.format, LogFormat::Text);
    let errors = errors_of(&format!("[log]\nfilter = \"info,=[\"\nformat = \"xml\"\n{route}"));
    assert!(errors.iter().any(|e| e.starts_with("log.filter: not a valid filter")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("log.format: expected one of \"text\", \"json\"")), "{errors:#?}");
}

const ROUTE: &str = "[[routes]]\nname = \"r\"\nfrom = \"devices/+/events\"\nto = \"t\"\n";

mod links;
use links::Pki;

#[test]
fn warnings_name_secret_files_others_can_read_and_disabled_verification() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let key = pki.path("client.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let password = pki.path("password.txt");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = pki.cloud(
        "mqtts://h",
        &format!(
            "insecure_skip_verify = true\ncert_file = \"{}\"\nkey_file = \"{key}\"\nusername = \"u\"\npassword_file = \"{password}\"\n",
            pki.path("client.pem")
        ),
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e:#?}"));
    let file = pki.path("gateway.toml");
    std::fs::write(&file, &text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The config itself holds no secret (the password is in a file): its mode does not matter.
    let warnings = config.warnings(std::path::Path::new(&file));
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[0].starts_with(&format!("cloud.key_file: {key} is readable by other users (mode 640)")));
    assert!(warnings[1].starts_with("cloud.insecure_skip_verify = true: the broker's certificate is NOT verified"));

    // A token written in the config: now the config file must be private.
    let text = format!("[http]\ntoken = \"0123456789abcdef-token\"\n{ROUTE}");
    let config = parse(&text).unwrap();
    std::fs::write(&file, &text).unwrap();
    let warnings = config.warnings(std::path::Path::new(&file));
    assert_eq!(
        warnings,
        vec![format!(
            "config file: {file} is readable by other users (mode 644); it holds http.token: chmod 600 or 640 it"
        )]
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(config.warnings(std::path::Path::new(&file)).is_empty());
}

#[test]
fn the_http_token_file_is_a_secret_file_and_the_inline_token_stays_hidden() {
    let pki = Pki::new();
    let config = parse(&format!("[http]\ntoken_file = \"{}\"\n{ROUTE}", pki.path("password.txt")))
        .unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(config.secret_files[0].key, "http.token_file");
    let config = parse(&format!("[http]\ntoken = \"0123456789abcdef-token\"\n{ROUTE}")).unwrap();
    assert!(!format!("{config:?}").contains("0123456789abcdef"));
}

#[test]
fn a_mistyped_secret_is_an_error_that_does_not_quote_it() {
    let errors = errors_of(&format!("[cloud]\nusername = \"u\"\npassword = 987654321\n{ROUTE}"));
    assert_eq!(errors, vec!["cloud.password: expected a string (the value is a secret and not shown)"]);
    let errors = errors_of(&format!("[http]\ntoken = 12345678901234567\n{ROUTE}"));
    assert_eq!(errors, vec!["http.token: expected a string (the value is a secret and not shown)"]);
    // Unquoted: not TOML at all; the message names the line, not its text.
    let errors = errors_of(&format!("[cloud]\nusername = \"u\"\npassword = hunter2xyz\n{ROUTE}"));
    assert!(errors[0].starts_with("(file): not valid TOML (line 3)"), "{errors:#?}");
    assert!(!errors.iter().any(|e| e.contains("hunter2xyz")), "{errors:#?}");
}

#[test]
fn keep_forwarded_is_off_by_default_and_a_duration_when_set() {
    let route = "[[routes]]\nname = \"t\"\nfrom = \"devices/+/events\"\nto = \"x/{gateway}\"\n";
    assert_eq!(parse(route).unwrap().store.keep_forwarded, None);
    let on = parse(&format!("[store]\nkeep_forwarded = \"24h\"\n{route}")).unwrap();
    assert_eq!(on.store.keep_forwarded, Some(Duration::from_secs(86_400)));
    let zero = parse(&format!("[store]\nkeep_forwarded = \"0s\"\n{route}")).unwrap();
    assert_eq!(zero.store.keep_forwarded, None, "0s is off");
    let errors = errors_of(&format!("[store]\nkeep_forwarded = \"a day\"\n{route}"));
    assert!(errors.len() == 1 && errors[0].starts_with("store.keep_forwarded: "), "{errors:?}");
}

fn access_of(config: &Config) -> &Access {
    match &config.devices.mode {
        DevicesMode::Embedded { access, .. } => access,
        DevicesMode::External { .. } => panic!("not embedded"),
    }
}

#[test]
fn saying_nothing_about_device_auth_lets_nobody_in_and_the_default_config_says_anonymous() {
    let config = parse(ROUTE).unwrap();
    assert_eq!(access_of(&config), &Access::Users(Default::default()), "closed, never anonymous by omission");
    assert!(config.summary().contains("0 device user(s)"), "{}", config.summary());
    let default = parse(DEFAULT).unwrap();
    assert_eq!(access_of(&default), &Access::Anonymous);
    assert!(default.summary().contains("ANONYMOUS"), "{}", default.summary());
}

#[test]
fn device_users_from_the_config_and_a_file_are_checked_and_never_printed() {
    // An argon2id hash of "pw" (`edge-gateway hash-password`); making one is the device stage's job.
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$zl9f8L11G1xrbqQjCxmFqQ$se5d5WektisKKfTYVb2CNaHBcoN9MH+QYAEcKsdZvig";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devices.passwd");
    std::fs::write(&file, format!("# comment\n\nsensor-2:{hash}\n")).unwrap();
    let text = format!(
        "[devices.auth]\nusers = {{ \"sensor-1\" = \"{hash}\" }}\nusers_file = \"{}\"\n{ROUTE}",
        file.display()
    );
    let config = parse(&text).unwrap();
    let Access::Users(users) = access_of(&config) else { panic!() };
    assert_eq!(users.len(), 2);
    let debug = format!("{config:?}");
    assert!(debug.contains("sensor-1") && !debug.contains(hash), "{debug}");

    std::fs::write(&file, format!("sensor-1:{hash}\nno colon here\nbad/name:{hash}\nsensor-3:plain\n")).unwrap();
    let errors = errors_of(&text);
    let path = file.display().to_string();
    for expect in [
        format!("devices.auth.users_file: {path} line 1: user \"sensor-1\" is listed twice"),
        format!("devices.auth.users_file: {path} line 2: expected name:hash"),
        format!("devices.auth.users_file: {path} line 3: user \"bad/name\""),
        format!("devices.auth.users_file: {path} line 4: user \"sensor-3\": not a PHC password hash"),
    ] {
        assert!(errors.iter().any(|e| e.starts_with(&expect)), "missing {expect:?} in {errors:#?}");
    }
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn device_auth_and_tls_errors_name_their_keys() {
    let errors = errors_of(&format!(
        "[devices]\ntls_cert_file = \"/nonexistent/cert.pem\"\n[devices.auth]\nallow_anonymous = true\n\
         users = {{ \"d1\" = \"$md5$x\" }}\nusers_file = \"/nonexistent/passwd\"\n{ROUTE}"
    ));
    for expect in [
        "devices.tls_key_file: required with devices.tls_cert_file",
        "devices.auth.allow_anonymous: cannot be combined with users or users_file",
        "devices.auth.users.d1: user \"d1\": not a PHC password hash",
        "devices.auth.users_file: cannot read /nonexistent/passwd",
    ] {
        assert!(errors.iter().any(|e| e.starts_with(expect)), "missing {expect:?} in {errors:#?}");
    }
    assert_eq!(errors.len(), 4, "{errors:#?}");

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.display();
    let errors = errors_of(&format!(
        "[devices]\ntls_cert_file = \"{junk}\"\ntls_key_file = \"{junk}\"\n[devices.auth]\nallow_anonymous = true\n{ROUTE}"
    ));
    assert!(
        errors.iter().any(|e| e.starts_with("devices.tls_cert_file:") && e.contains("no PEM certificate")),
        "{errors:#?}"
    );
    let errors = errors_of(&format!("[devices]\ntls_client_ca_file = \"{junk}\"\n{ROUTE}"));
    assert!(
        errors.iter().any(|e| e.starts_with("devices.tls_client_ca_file: needs devices.tls_cert_file")),
        "{errors:#?}"
    );
    let errors = errors_of(&format!(
        "[devices]\nmode = \"external\"\nurl = \"mqtt://127.0.0.1:1883\"\n[devices.auth]\nallow_anonymous = true\n{ROUTE}"
    ));
    assert!(errors.iter().any(|e| e.starts_with("devices.auth: only used with mode = \"embedded\"")), "{errors:#?}");
    let errors = errors_of(&format!("[devices.auth]\nallow_anonymos = true\n{ROUTE}"));
    assert!(errors.iter().any(|e| e.starts_with("devices.auth.allow_anonymos: unknown field")), "{errors:#?}");
}
