//! Live route changes through the real forwarder, in process: the journal (SQLite in a temp
//! dir), ingest on a thread of its own (as the device side runs it), the forwarder, and
//! Mosquitto as the cloud. `pipeline::RouteControl` adds, removes and configures again a
//! route while events flow (docs/architecture.md, "Live reload"); what the cloud receives
//! says whether the forwarder followed. The end-to-end test through SIGHUP and the real
//! binary is `reload_routes.rs`.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use edge_gateway::config::{Config, Unrouted};
use edge_gateway::ingest::Ingest;
use edge_gateway::metrics::Metrics;
use edge_gateway::pipeline::{Batcher, RouteControl};
use edge_gateway::store::{Journal, RouteSpec, Store};
use edge_gateway::{forward, pipeline};
use edge_tests::clients::{device_events, CloudSubscriber};
use edge_tests::mosquitto::Mosquitto;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// Routes `a` and, when `with_b`, `b` (whose batches wait `b_delay` for company).
fn config(cloud: u16, with_b: bool, b_delay: &str) -> Config {
    let mut text = format!(
        "[gateway]\nid = \"gw\"\n[cloud]\nurl = \"mqtt://127.0.0.1:{cloud}\"\n\
         [[routes]]\nname = \"a\"\nfrom = \"devices/+/events\"\nto = \"gateways/{{gateway}}/a\"\n\
         batch = {{ max_delay = \"20ms\" }}\n"
    );
    if with_b {
        text += &format!(
            "[[routes]]\nname = \"b\"\nfrom = \"devices/+/events\"\nto = \"gateways/{{gateway}}/b\"\n\
             batch = {{ max_delay = \"{b_delay}\" }}\n"
        );
    }
    Config::parse(&text).unwrap()
}

/// Ingest as the device side runs it: publishes as they come, a tick when idle.
fn ingest_thread(ingest: Ingest, store: edge_gateway::store::StoreHandle) -> std_mpsc::Sender<(String, Vec<u8>)> {
    let (tx, rx) = std_mpsc::channel::<(String, Vec<u8>)>();
    std::thread::spawn(move || {
        let (_replays_tx, replays) = std_mpsc::channel();
        let mut batcher = Batcher::new(ingest, store, replays).bounded();
        loop {
            match rx.recv_timeout(pipeline::TICK) {
                Ok((topic, payload)) => {
                    batcher.push(&topic, &payload, None).unwrap();
                    batcher.flush().unwrap();
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => batcher.tick().unwrap(),
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    tx
}

/// The journal, the forwarder and ingest on its thread, started from `config` with the
/// route control a reload would use.
struct Pipeline {
    metrics: Arc<Metrics>,
    handle: edge_gateway::store::StoreHandle,
    control: RouteControl,
    device: std_mpsc::Sender<(String, Vec<u8>)>,
    stop: CancellationToken,
    forwarder: tokio::task::JoinHandle<()>,
    writer: edge_gateway::store::WriterGuard,
}

impl Pipeline {
    fn start(dir: &std::path::Path, config: &Config) -> Pipeline {
        let metrics = Arc::new(Metrics::of(config));
        let Store { handle, opened, writer } =
            Journal::new(dir).open(&config.store, &RouteSpec::of(config), metrics.clone(), None).unwrap();
        let (control, wiring) =
            RouteControl::new(handle.clone(), &config.routes, &config.cloud, metrics.as_ref().into());
        let stop = CancellationToken::new();
        let setup = forward::Setup {
            gateway_id: "gw".into(),
            cloud: config.cloud.clone(),
            routes: config.routes.clone(),
            last_batch: opened.last_batch.clone(),
            store: handle.clone(),
            metrics: metrics.as_ref().into(),
            changes: wiring.forwarder,
            security: wiring.security,
        };
        let forwarder = tokio::spawn(forward::run(setup, stop.clone()));
        let ingest = Ingest::new(config.routes.clone(), metrics.clone(), Vec::new(), 1).with_updates(wiring.ingest);
        let device = ingest_thread(ingest, handle.clone());
        Pipeline { metrics, handle, control, device, stop, forwarder, writer }
    }

    async fn stop(self) {
        drop(self.device);
        self.stop.cancel();
        self.forwarder.await.unwrap();
        self.writer.join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_sends_a_route_added_live_stops_a_removed_one_and_resumes_it_with_its_kept_rows() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::start(dir.path(), &config(cloud.port, false, "20ms"));
    let Pipeline { metrics, handle, control, device, .. } = &pipeline;
    let publish = |first: u32, count: u32| {
        for event in device_events("d1", first, count) {
            device.send(event).unwrap();
        }
    };

    let seqs = |seqs: &mut dyn Iterator<Item = u32>| seqs.map(|seq| ("d1".to_owned(), 1, seq)).collect::<Vec<_>>();
    // Waits until route `route` has carried exactly `want`, in that order.
    let carried = |route: &str, want: Vec<_>| {
        edge_tests::wait_until(WAIT, &format!("{route}: {want:?}"), || {
            (sub.snapshot().of_route(route) == want).then_some(())
        })
    };
    publish(1, 20);
    carried("a", seqs(&mut (1..=20)));

    // Added: b takes what is published from now on, a loses nothing.
    let lines = control.apply_routes(&config(cloud.port, true, "20ms").routes, Unrouted::Count).await.unwrap();
    assert_eq!(lines, vec![r#"route "b" added"#]);
    publish(21, 20);
    carried("b", seqs(&mut (21..=40)));
    carried("a", seqs(&mut (1..=40)));
    let text = metrics.render(0);
    assert!(text.contains("edge_gateway_events_forwarded_total{route=\"b\"} 20"), "{text}");

    // b now holds its batches for an hour: 10 rows wait in the journal when it is removed.
    control.apply_routes(&config(cloud.port, true, "1h").routes, Unrouted::Count).await.unwrap();
    publish(41, 10);
    edge_tests::wait_until(WAIT, "b's 10 rows committed", || (handle.committed().depth(1) == 10).then_some(()));
    let lines = control.apply_routes(&config(cloud.port, false, "20ms").routes, Unrouted::Count).await.unwrap();
    assert_eq!(
        lines,
        vec![r#"route "b" removed: 10 events kept in the journal until a route named "b" is configured again"#]
    );
    publish(51, 10);
    carried("a", seqs(&mut (1..=60)));
    assert_eq!(sub.snapshot().of_route("b").len(), 20, "nothing more on b while it is removed");
    assert_eq!(handle.committed().depth(1), 10, "b's rows are kept");

    // Configured again: its kept rows go out first, then what is published after.
    let lines = control.apply_routes(&config(cloud.port, true, "20ms").routes, Unrouted::Count).await.unwrap();
    assert_eq!(lines, vec![r#"route "b" added: its 10 events kept in the journal are forwarded again"#]);
    publish(61, 10);
    carried("b", seqs(&mut (21..=50).chain(61..=70)));
    carried("a", seqs(&mut (1..=70)));
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_cloud_credentials_are_used_from_the_next_connection_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, secured) = Mosquitto::start_with_user("gw", "the-right-one");
    let sub = CloudSubscriber::connect(cloud.port).await;
    let with_password = |password: &str| {
        let text = format!(
            "[gateway]\nid = \"gw\"\n[cloud]\nurl = \"mqtt://127.0.0.1:{secured}\"\nusername = \"gw\"\n\
             password = \"{password}\"\nbackoff_max = \"300ms\"\n\
             [[routes]]\nname = \"a\"\nfrom = \"devices/+/events\"\nto = \"gateways/{{gateway}}/a\"\n\
             batch = {{ max_delay = \"20ms\" }}\n"
        );
        Config::parse(&text).unwrap()
    };
    let wrong = with_password("a-wrong-one");
    let pipeline = Pipeline::start(dir.path(), &wrong);
    let Pipeline { metrics, handle, control, device, .. } = &pipeline;
    for event in device_events("d1", 1, 10) {
        device.send(event).unwrap();
    }
    edge_tests::wait_until(WAIT, "a refused connection", || {
        metrics.last_error.get().filter(|(_, message)| message.contains("cloud link down")).map(|_| ())
    });
    edge_tests::wait_until(WAIT, "10 rows kept while the cloud refuses the gateway", || {
        (handle.committed().depth(0) == 10).then_some(())
    });
    assert!(sub.snapshot().events.is_empty(), "nothing got through with the wrong password");

    let lines = control.apply_cloud(&with_password("the-right-one").cloud);
    assert_eq!(lines, vec!["cloud credentials: used from the next connection"]);
    let got = sub.wait_distinct(10, WAIT);
    assert_eq!(got.of_route("a").len(), 10);
    pipeline.stop().await;
}
