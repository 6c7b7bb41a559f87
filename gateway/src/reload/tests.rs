use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const BASE: &str = r#"
[gateway]
data_dir = "DATA"
[devices.auth]
allow_anonymous = true
[http]
listen = "127.0.0.1:9464"
[log]
filter = "info"
[[routes]]
name = "telemetry"
from = "devices/+/events"
to = "gateways/{gateway}/telemetry"
"#;

struct Rig {
    _dir: tempfile::TempDir,
    path: PathBuf,
    reloader: Reloader,
    metrics: Arc<ReloadMetrics>,
    log_calls: Arc<AtomicUsize>,
}

fn rig(fail_log: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let text = BASE.replace("DATA", &dir.path().join("data").display().to_string());
    std::fs::write(&path, &text).unwrap();
    let config = Config::load(&path).unwrap();
    let log_calls = Arc::new(AtomicUsize::new(0));
    let calls = log_calls.clone();
    let parts = vec![Part {
        name: "log filter",
        keys: &["log.filter"],
        apply: Box::new(move |config: &Config| {
            calls.fetch_add(1, Ordering::Relaxed);
            if fail_log {
                Err("no log handle".into())
            } else {
                Ok(vec![format!("log.filter = {:?}", config.log.filter)])
            }
        }),
    }];
    let metrics = Arc::new(ReloadMetrics::started(1));
    let reloader = Reloader::new(path.clone(), &config, None, parts, metrics.clone());
    Rig { _dir: dir, path, reloader, metrics, log_calls }
}

fn edit(rig: &Rig, from: &str, to: &str) {
    let text = std::fs::read_to_string(&rig.path).unwrap();
    assert!(text.contains(from), "{from} not in the file");
    std::fs::write(&rig.path, text.replace(from, to)).unwrap();
}

#[test]
fn an_unchanged_file_applies_nothing() {
    let rig = rig(false);
    let outcome = rig.reloader.reload("test");
    assert_eq!(outcome.result, ReloadResult::Applied);
    assert!(outcome.applied.is_empty() && outcome.needs_restart.is_empty(), "{outcome:?}");
    assert_eq!(rig.log_calls.load(Ordering::Relaxed), 0);
}

#[test]
fn a_live_key_is_applied_and_a_restart_key_is_named_and_stays_different() {
    let rig = rig(false);
    edit(&rig, "filter = \"info\"", "filter = \"debug\"");
    edit(&rig, "127.0.0.1:9464", "127.0.0.1:9465");
    let outcome = rig.reloader.reload("test");
    assert_eq!(outcome.result, ReloadResult::Applied, "{outcome:?}");
    assert_eq!(outcome.applied, vec!["log.filter = \"debug\"".to_owned()]);
    assert_eq!(outcome.needs_restart, vec!["http.listen".to_owned()]);
    // The next reload: the log filter is now the running one; the listen address is not.
    let again = rig.reloader.reload("test");
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.needs_restart, vec!["http.listen".to_owned()]);
    assert_eq!(rig.log_calls.load(Ordering::Relaxed), 1);
    let preview = rig.reloader.preview(&std::fs::read_to_string(&rig.path).unwrap());
    assert_eq!(preview.changes.len(), 1, "{preview:?}");
    assert!(!preview.changes[0].live && preview.changes[0].change.starts_with("http.listen"));
}

#[test]
fn an_invalid_file_changes_nothing_and_reports_every_error() {
    let rig = rig(false);
    edit(&rig, "filter = \"info\"", "filter = \"debug\"\nbogus = 1");
    edit(&rig, "to = \"gateways/{gateway}/telemetry\"", "to = \"\"");
    let outcome = rig.reloader.reload("test");
    assert_eq!(outcome.result, ReloadResult::Refused);
    assert_eq!(outcome.errors.len(), 2, "{outcome:?}");
    assert!(outcome.errors.iter().any(|e| e.starts_with("log.bogus")), "{outcome:?}");
    assert!(outcome.errors.iter().any(|e| e.starts_with("routes[0].to")), "{outcome:?}");
    assert_eq!(rig.log_calls.load(Ordering::Relaxed), 0, "nothing may be applied from an invalid file");
    assert_eq!(rig.metrics.reloads[ReloadResult::Refused as usize].get(), 1);
    assert_eq!(rig.metrics.last_successful.get(), 0);
    assert_eq!(rig.reloader.last(), Some(outcome));
}

#[test]
fn a_part_that_fails_keeps_its_keys_different_and_is_reported() {
    let rig = rig(true);
    edit(&rig, "filter = \"info\"", "filter = \"debug\"");
    let outcome = rig.reloader.reload("test");
    assert_eq!(outcome.result, ReloadResult::Failed);
    assert_eq!(outcome.errors, vec!["log filter: no log handle (log.filter unchanged)".to_owned()]);
    assert_eq!(rig.metrics.reloads[ReloadResult::Failed as usize].get(), 1);
    let preview = rig.reloader.preview(&std::fs::read_to_string(&rig.path).unwrap());
    assert_eq!(preview.changes.len(), 1);
    assert!(preview.changes[0].live);
}

fn rig_remote() -> Rig {
    let rig = rig(false);
    edit(&rig, "[log]", "[remote_config]\nenabled = true\nsections = [\"log\"]\n[log]");
    let config = Config::load(&rig.path).unwrap();
    let calls = rig.log_calls.clone();
    let parts = vec![Part {
        name: "log filter",
        keys: &["log.filter"],
        apply: Box::new(move |config: &Config| {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(vec![format!("log.filter = {:?}", config.log.filter)])
        }),
    }];
    let reloader = Reloader::new(rig.path.clone(), &config, None, parts, rig.metrics.clone());
    Rig { reloader, ..rig }
}

#[test]
fn a_cloud_document_is_merged_over_the_file_and_stays_in_effect_across_reloads_of_the_file() {
    let rig = rig_remote();
    let document = RemoteDocument::parse(b"version = \"v1\"\n[log]\nfilter = \"debug\"\n").unwrap();
    let outcome = rig.reloader.apply_remote(Ok(Some(document)));
    assert_eq!(outcome.result, ReloadResult::Applied, "{outcome:?}");
    assert_eq!(outcome.applied, vec!["log.filter = \"debug\"".to_owned()]);
    assert_eq!(outcome.remote_version.as_deref(), Some("v1"));
    // A reload of the file keeps the document over it: nothing to change.
    let again = rig.reloader.reload("SIGHUP");
    assert!(again.applied.is_empty() && again.needs_restart.is_empty(), "{again:?}");
    assert_eq!(again.remote_version.as_deref(), Some("v1"));
    // The cloud clears it: back to the file's filter.
    let cleared = rig.reloader.apply_remote(Ok(None));
    assert_eq!(cleared.applied, vec!["log.filter = \"info\"".to_owned()], "{cleared:?}");
    assert_eq!(cleared.remote_version, None);
}

#[test]
fn a_cloud_document_outside_the_allowed_sections_or_unreadable_is_refused_and_changes_nothing() {
    let rig = rig_remote();
    let good = RemoteDocument::parse(b"version = \"v1\"\n[log]\nfilter = \"debug\"\n").unwrap();
    rig.reloader.apply_remote(Ok(Some(good)));
    let bad = RemoteDocument::parse(b"version = \"v2\"\n[log]\nfilter = \"warn\"\n[http]\nlisten = \"0.0.0.0:1\"\n");
    let outcome = rig.reloader.apply_remote(Ok(Some(bad.unwrap())));
    assert_eq!(outcome.result, ReloadResult::Refused);
    assert_eq!(outcome.remote_version.as_deref(), Some("v1"), "v1 stays in effect");
    assert!(outcome.errors[0].starts_with("http: this section cannot be managed remotely"), "{outcome:?}");
    let unreadable = rig.reloader.apply_remote(Err("not valid TOML".into()));
    assert_eq!(unreadable.result, ReloadResult::Refused);
    assert_eq!(rig.log_calls.load(Ordering::Relaxed), 1, "only v1 was applied");
    assert_eq!(rig.metrics.reloads[ReloadResult::Refused as usize].get(), 2);
}

#[test]
fn a_cloud_document_goes_over_the_file_as_last_loaded_not_over_edits_not_reloaded_yet() {
    let rig = rig_remote();
    edit(&rig, "listen = \"127.0.0.1:9464\"", "listen = \"127.0.0.1:9999\"");
    let document = RemoteDocument::parse(b"version = \"v1\"\n[log]\nfilter = \"debug\"\n").unwrap();
    let outcome = rig.reloader.apply_remote(Ok(Some(document)));
    assert_eq!(outcome.result, ReloadResult::Applied, "{outcome:?}");
    assert!(outcome.needs_restart.is_empty(), "the file's edit leaked into a cloud reload: {outcome:?}");
    // The next reload of the file is what reads the edit.
    let reload = rig.reloader.reload("SIGHUP");
    assert_eq!(reload.needs_restart, vec!["http.listen".to_owned()], "{reload:?}");
}

#[test]
fn a_preview_never_reads_a_device_or_a_pipe() {
    let rig = rig(false);
    let text = std::fs::read_to_string(&rig.path).unwrap() + "[cloud]\npassword_file = \"/dev/zero\"\n";
    let preview = rig.reloader.preview(&text);
    assert_eq!(preview.errors, vec!["cloud.password_file: /dev/zero is not a regular file".to_owned()]);
}
