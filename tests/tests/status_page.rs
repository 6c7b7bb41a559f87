//! The status page at `/`, in a real browser: headless Chromium (Debian's `chromium`) against
//! the real gateway with Mosquitto as the cloud. The page loads on a phone-sized screen, shows
//! the numbers of `/api/status`, and follows them live as events flow, the link drops and
//! comes back, and the gateway goes away. Its devices view shows what `/api/devices` says
//! (last seen, counts, latest readings), also while the cloud is down.
//!
//! Chromium is driven over the DevTools protocol on `--remote-debugging-pipe` (JSON messages
//! separated by NUL on its fds 3 and 4, which `sh` maps to the child's stdin and stdout): one
//! page stays open for the whole test, which `--dump-dom` (a fresh load per call) cannot show.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edge_tests::clients::{device_events, publish_all};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{event_json, http};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const INSTALL: &str = "sudo apt-get install -y --no-install-recommends chromium";

/// Headless Chromium with one page open, driven over the DevTools protocol.
struct Chromium {
    child: Child,
    input: ChildStdin,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// `$CHROMIUM` or `chromium` from PATH; panics with the install line when there is none.
    fn binary() -> String {
        let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
        match Command::new(&bin).arg("--version").stderr(Stdio::null()).output() {
            Ok(out) if out.status.success() => bin,
            Ok(out) => panic!("`{bin} --version` failed ({}): install Debian's Chromium: {INSTALL}", out.status),
            Err(err) => panic!(
                "this test needs headless Chromium and `{bin}` cannot run ({err}).\n\
                 Install Debian's Chromium: {INSTALL}\n(scripts/test installs it; or set CHROMIUM=/path/to/chromium)"
            ),
        }
    }

    /// Starts the browser and opens one phone-sized (412x915, mobile) blank page.
    fn launch() -> Chromium {
        let bin = Chromium::binary();
        let profile = tempfile::tempdir().expect("temp dir");
        let log = profile.path().join("chromium.log");
        let mut child = Command::new("sh")
            .args(["-c", "exec \"$@\" 3<&0 4>&1 </dev/null >/dev/null", "sh", &bin])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=412,915",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("chromium log"))
            .spawn()
            .expect("cannot start sh for chromium");
        let input = child.stdin.take().expect("stdin");
        let mut output = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || loop {
            let mut message = Vec::new();
            match output.read_until(0, &mut message) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if message.last() == Some(&0) {
                        message.pop();
                    }
                    let Ok(value) = serde_json::from_slice(&message) else { continue };
                    if tx.send(value).is_err() {
                        return;
                    }
                }
            }
        });
        let mut browser =
            Chromium { child, input, messages, next_id: 0, session: String::new(), log, _profile: profile };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].clone();
        let attached = browser.call("Target.attachToTarget", json!({ "targetId": target, "flatten": true }));
        browser.session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        let phone = json!({ "width": 412, "height": 915, "deviceScaleFactor": 1, "mobile": true });
        browser.call("Emulation.setDeviceMetricsOverride", phone);
        browser
    }

    /// One DevTools command (on the page once attached); its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("json");
        bytes.push(0);
        if let Err(err) = self.input.write_all(&bytes).and_then(|()| self.input.flush()) {
            panic!("chromium is gone ({err}):\n{}", self.log_text());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(reply) if reply["id"] == id => {
                    assert!(reply.get("error").is_none(), "{method}: {}", reply["error"]);
                    return reply["result"].clone();
                }
                Ok(_event) => {}
                Err(err) => panic!("no answer from chromium to {method} ({err}):\n{}", self.log_text()),
            }
        }
    }

    /// Evaluates `expression` in the page; its value (JSON).
    fn eval(&mut self, expression: &str) -> Value {
        let params = json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let result = self.call("Runtime.evaluate", params);
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {}", result["exceptionDetails"]);
        result["result"]["value"].clone()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows: the `data-value` of its figures, by id, route and drop reason.
const SNAPSHOT: &str = r##"(() => {
  const root = document.getElementById("status");
  if (!root) return null;
  const figures = {};
  for (const e of document.querySelectorAll("[id][data-value]")) figures[e.id] = e.dataset.value;
  const routes = {};
  for (const r of document.querySelectorAll("[data-route]")) {
    const fields = {};
    for (const f of r.querySelectorAll("[data-field]")) fields[f.dataset.field] = f.dataset.value ?? null;
    routes[r.dataset.route] = fields;
  }
  const drops = {};
  for (const d of document.querySelectorAll("[data-drop]")) drops[d.dataset.drop] = d.dataset.value;
  const errors = Array.from(document.querySelectorAll("#errors [data-dlq-id]"))
    .map((e) => ({ id: Number(e.dataset.dlqId), text: e.textContent }));
  return { updated: Number(root.dataset.updated), state: root.dataset.state, figures, routes, drops, errors,
    banner: document.getElementById("banner").hidden ? "" : document.getElementById("banner").textContent };
})()"##;

/// The devices view: per device, its fields and readings (`data-value`s).
const DEVICES: &str = r##"(() => {
  const out = {};
  for (const row of document.querySelectorAll("#devices [data-device]")) {
    const fields = {}, readings = {};
    for (const f of row.querySelectorAll("[data-field]")) fields[f.dataset.field] = f.dataset.value;
    for (const r of row.querySelectorAll("[data-reading]")) readings[r.dataset.reading] = JSON.parse(r.dataset.value);
    out[row.dataset.device] = { fields, readings, text: row.textContent };
  }
  return out;
})()"##;

/// Polls until the devices view shows what `/api/devices?readings=true` says and `also` holds.
fn settle_devices(browser: &mut Chromium, port: u16, what: &str, also: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = browser.eval(DEVICES);
        let (code, body) = http::get(port, "/api/devices?readings=true").expect("HTTP");
        assert_eq!(code, 200, "{body}");
        let api: Value = serde_json::from_str(&body).unwrap();
        let mut diffs = Vec::new();
        let devices = api.as_array().unwrap();
        if shown.as_object().map_or(0, |o| o.len()) != devices.len() {
            diffs.push(format!("{} devices shown, api {}", shown.as_object().map_or(0, |o| o.len()), devices.len()));
        }
        for d in devices {
            let row = &shown[d["device"].as_str().unwrap()];
            for field in ["last_seen_ms", "events", "reading_count"] {
                if row["fields"][field] != Value::String(d[field].to_string()) {
                    diffs.push(format!("{} {field}: page {}, api {}", d["device"], row["fields"][field], d[field]));
                }
            }
            for r in d["readings"].as_array().unwrap() {
                let page = &row["readings"][r["name"].as_str().unwrap()];
                // 40.0 in the API is 40 in JavaScript: numbers compare as numbers.
                let same = match (page.as_f64(), r["value"].as_f64()) {
                    (Some(a), Some(b)) => a == b,
                    _ => *page == r["value"],
                };
                if !same {
                    diffs.push(format!("{} {}: page {}, api {}", d["device"], r["name"], row["readings"], r["value"]));
                }
            }
        }
        if diffs.is_empty() && also(&shown) {
            return shown;
        }
        assert!(Instant::now() < deadline, "timed out waiting for the devices view to show {what}: {diffs:?} {shown}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A page figure as a number (`data-value` is text).
fn num(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// Where the page differs from `/api/status`, or None when every figure agrees.
fn mismatch(page: &Value, api: &Value) -> Option<String> {
    let mut diffs = Vec::new();
    let fig = &page["figures"];
    let mut check = |what: &str, shown: f64, want: &Value| {
        if shown != want.as_f64().unwrap_or(f64::NAN) {
            diffs.push(format!("{what}: page {shown}, api {want}"));
        }
    };
    check("events-received", num(&fig["events-received"]), &api["events_received"]);
    check("events-committed", num(&fig["events-committed"]), &api["events_committed"]);
    check("dead-letters", num(&fig["dead-letters"]), &api["dead_letters"]);
    check("reconnects", num(&fig["reconnects"]), &api["cloud_reconnects"]);
    check("devices-connected", num(&fig["devices-connected"]), &api["devices_connected"]);
    let routes = api["routes"].as_array().cloned().unwrap_or_default();
    let forwarded: u64 = routes.iter().map(|r| r["forwarded"].as_u64().unwrap_or(0)).sum();
    check("events-forwarded", num(&fig["events-forwarded"]), &json!(forwarded));
    let backlog: u64 = routes.iter().map(|r| r["queue_depth"].as_u64().unwrap_or(0)).sum();
    check("backlog", num(&fig["backlog"]), &json!(backlog));
    let dropped = api["dropped"].as_object().cloned().unwrap_or_default();
    check("dropped-total", num(&fig["dropped-total"]), &json!(dropped.values().filter_map(Value::as_u64).sum::<u64>()));
    for (reason, n) in &dropped {
        check(&format!("drop {reason}"), num(&page["drops"][reason]), n);
    }
    for r in &routes {
        let name = r["name"].as_str().unwrap_or_default();
        for field in ["queue_depth", "queue_bytes", "oldest_age_seconds", "forwarded", "batches"] {
            check(&format!("route {name} {field}"), num(&page["routes"][name][field]), &r[field]);
        }
    }
    let link = if api["cloud_link_up"] == true { "up" } else { "down" };
    if fig["link"] != link {
        diffs.push(format!("link: page {}, api {link}", fig["link"]));
    }
    for (id, key) in [("gateway", "gateway"), ("version", "version")] {
        if fig[id] != api[key] {
            diffs.push(format!("{id}: page {}, api {}", fig[id], api[key]));
        }
    }
    if page["routes"].as_object().map_or(0, |r| r.len()) != routes.len() {
        diffs.push(format!("routes: page {:?}, api {}", page["routes"].as_object().map(|r| r.keys()), routes.len()));
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
}

/// Polls the page (every 50 ms, each poll also reading `/api/status`) until it shows what the API
/// says and `also` holds; returns that snapshot. `seen` sees every snapshot on the way.
fn settle(
    browser: &mut Chromium,
    port: u16,
    what: &str,
    also: impl Fn(&Value, &Value) -> bool,
    mut seen: impl FnMut(&Value),
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let page = browser.eval(SNAPSHOT);
        seen(&page);
        let api = http::status(port);
        let last = match mismatch(&page, &api) {
            None if also(&page, &api) => return page,
            None => format!("the figures agree, but not yet {what}: page {page}\napi {api}"),
            Some(diff) => diff,
        };
        assert!(Instant::now() < deadline, "timed out waiting for the page to show {what}: {last}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn routes() -> String {
    "[[routes]]\nname = \"telemetry\"\nfrom = \"devices/+/events\"\nto = \"gateways/{gateway}/telemetry\"\n\
     batch = { max_events = 500, max_bytes = \"64KiB\", max_delay = \"20ms\" }\n\n\
     [[routes]]\nname = \"alarms\"\nfrom = \"devices/+/alarms\"\nto = \"gateways/{gateway}/alarms\"\n"
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_api_figures_in_a_browser_and_follows_them_live() {
    let mut browser = Chromium::launch();
    let mut cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = routes();
    let mut gateway = Gateway::start(&setup);
    let (devices, port) = (setup.devices_port, setup.http_port);

    // Traffic before the page opens: 300 telemetry events, 5 alarms, 2 dead letters.
    let mut events = device_events("d1", 1, 300);
    events.extend((1..=5).map(|seq| ("devices/d1/alarms".to_owned(), event_json("d1", 2, seq).into_bytes())));
    events.push(("devices/bad/events".into(), b"not an event <b>bold</b>".to_vec()));
    events.push(("devices/worse/events".into(), br#"{"device":"worse"}"#.to_vec()));
    publish_all(devices, "d1", events).await.unwrap();
    edge_tests::wait_until(WAIT, "the first events to settle", || {
        let s = http::status(port);
        let forwarded = |i: usize| s["routes"][i]["forwarded"].clone();
        (s["events_committed"] == 305 && s["dead_letters"] == 2 && forwarded(0) == 300 && forwarded(1) == 5)
            .then_some(())
    });

    // It loads: HTML served by the gateway, nothing fetched from anywhere else, fits a phone.
    let url = format!("http://127.0.0.1:{port}/");
    browser.call("Page.navigate", json!({ "url": url }));
    let page = settle(&mut browser, port, "the first events", |_, _| true, |_| {});
    assert_eq!(page["state"], "ok");
    assert!(page["updated"].as_f64().unwrap() >= 1.0, "{page}");
    let origin = format!("http://127.0.0.1:{port}/");
    let loaded = browser.eval(
        "({ type: document.contentType, charset: document.characterSet, title: document.title, \
           external: document.querySelectorAll('script[src], link[href], img[src], iframe').length, \
           resources: performance.getEntriesByType('resource').map((e) => e.name), \
           overflow: document.documentElement.scrollWidth - window.innerWidth, width: window.innerWidth })",
    );
    assert_eq!(loaded["type"], "text/html", "{loaded}");
    assert_eq!(loaded["charset"], "UTF-8", "{loaded}");
    assert!(loaded["title"].as_str().unwrap().contains("gw-test"), "{loaded}");
    assert_eq!(loaded["external"], 0, "the page must be self-contained: {loaded}");
    for resource in loaded["resources"].as_array().unwrap() {
        assert!(resource.as_str().unwrap().starts_with(&origin), "fetched from elsewhere: {resource}");
    }
    assert_eq!(loaded["width"], 412, "{loaded}");
    assert!(loaded["overflow"].as_i64().unwrap() <= 0, "wider than a phone screen: {loaded}");

    // The last errors: both dead letters, newest first, payloads shown as text.
    let errors = page["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{page}");
    assert!(errors[0]["id"].as_i64() > errors[1]["id"].as_i64(), "newest first: {page}");
    let text = errors[0]["text"].as_str().unwrap();
    assert!(text.contains("devices/worse/events") && text.contains(r#"{"device":"worse"}"#), "{text}");
    assert!(errors[1]["text"].as_str().unwrap().contains("not an event <b>bold</b>"), "{page}");
    assert_eq!(page["routes"]["telemetry"]["forwarded"], "300");
    assert_eq!(page["routes"]["alarms"]["forwarded"], "5");

    // The devices view: d1 only (dead letters are not devices), its latest readings.
    let shown = settle_devices(&mut browser, port, "d1", |shown| shown.get("d1").is_some());
    assert_eq!(shown["d1"]["fields"]["events"], "305", "{shown}");
    assert_eq!(shown["d1"]["readings"]["celsius"], 21.5, "{shown}");
    assert_eq!(shown["d1"]["readings"]["humidity"], 40.0, "{shown}");
    assert!(shown["d1"]["text"].as_str().unwrap().contains("celsius 21.5"), "{shown}");

    // It updates, without a reload: more events, higher figures, non-zero rates.
    let before = page["updated"].as_f64().unwrap();
    publish_all(devices, "d2", device_events("d2", 1, 200)).await.unwrap();
    let (mut rate_in, mut rate_out) = (0f64, 0f64);
    let page = settle(
        &mut browser,
        port,
        "the next 200 events forwarded",
        |_, api| api["events_committed"] == 505 && api["routes"][0]["forwarded"] == 500,
        |page| {
            rate_in = rate_in.max(num(&page["figures"]["rate-in"]));
            rate_out = rate_out.max(num(&page["figures"]["rate-out"]));
        },
    );
    assert!(page["updated"].as_f64().unwrap() > before, "data-updated grows: {page}");
    assert_eq!(page["figures"]["events-committed"], "505");
    assert!(rate_in > 0.0 && rate_out > 0.0, "rates in {rate_in}/s, out {rate_out}/s");

    // The link drops: the page says so, and the backlog grows on it.
    cloud.stop();
    settle(&mut browser, port, "the link down", |_, api| api["cloud_link_up"] == false, |_| {});
    publish_all(devices, "d3", device_events("d3", 1, 50)).await.unwrap();
    let mut trends = BTreeMap::new();
    let page = settle(
        &mut browser,
        port,
        "a backlog of 50",
        |_, api| api["routes"][0]["queue_depth"] == 50,
        |page| *trends.entry(page["routes"]["telemetry"]["trend"].as_str().unwrap_or("").to_owned()).or_insert(0) += 1,
    );
    assert_eq!(page["figures"]["link"], "down");
    assert_eq!(page["figures"]["backlog"], "50");
    // With the cloud down, the devices view still follows: d3 is there with its 50 events.
    let shown = settle_devices(&mut browser, port, "d3 while the link is down", |shown| shown.get("d3").is_some());
    assert_eq!(shown["d3"]["fields"]["events"], "50", "{shown}");
    assert_eq!(shown["d3"]["fields"]["boot_seq"], "1/50", "{shown}");
    assert_eq!(shown.as_object().unwrap().len(), 3, "d1, d2, d3: {shown}");
    assert!(trends.contains_key("rising"), "the backlog trend shows it growing: {trends:?}");

    // The link comes back: the backlog drains, the reconnect is counted.
    cloud.restart();
    let page = settle(
        &mut browser,
        port,
        "the backlog drained after a reconnect",
        |_, api| api["cloud_link_up"] == true && api["routes"][0]["queue_depth"] == 0 && api["cloud_reconnects"] != 0,
        |_| {},
    );
    assert_eq!(page["figures"]["link"], "up");
    assert!(num(&page["routes"]["telemetry"]["forwarded"]) >= 550.0, "{page}");

    // The gateway goes away: the page says it cannot reach it, and keeps the last figures.
    gateway.kill();
    let deadline = Instant::now() + WAIT;
    let page = loop {
        let page = browser.eval(SNAPSHOT);
        if page["state"] == "unreachable" {
            break page;
        }
        assert!(Instant::now() < deadline, "the page never noticed the gateway is gone: {page}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(page["banner"].as_str().unwrap().contains("Cannot reach the gateway"), "{page}");
    assert_eq!(page["figures"]["events-committed"], "555");
}
