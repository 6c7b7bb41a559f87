//! [`RouteControl`] on a real journal (SQLite in a temp dir), a real ingest stage on a
//! thread of its own (as the device side runs it) and the forwarder's end of the wiring:
//! routes added, changed and removed while events flow, and what each stage then holds.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::config::{Config, StoreConfig};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::pipeline::Batcher;
use crate::store::{Journal, RouteIndex, Store};

const A: &str = "[[routes]]\nname = \"a\"\nfrom = \"devices/+/events\"\nto = \"up/a\"\n";
const B: &str = "[[routes]]\nname = \"b\"\nfrom = \"devices/+/events\"\nto = \"up/b\"\n";

fn routes(text: &str) -> Vec<RouteConfig> {
    Config::parse(text).unwrap().routes
}

fn publish(seq: u32) -> (String, Vec<u8>) {
    let json = format!(r#"{{"device":"d1","boot":1,"seq":{seq},"type":"t","readings":{{"v":{seq}}}}}"#);
    ("devices/d1/events".to_owned(), json.into_bytes())
}

/// What the ingest thread is sent: a publish, or "hand over what you have and say so".
enum Msg {
    Publish(String, Vec<u8>),
    Flush(std_mpsc::Sender<()>),
}

/// The pieces of a running pipeline, without the device broker and the cloud link.
struct Rig {
    _dir: tempfile::TempDir,
    store: Store,
    metrics: Arc<Metrics>,
    control: RouteControl,
    forwarder: mpsc::UnboundedReceiver<RouteSlot>,
    security: watch::Receiver<LinkSecurity>,
    ingest: Option<std_mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

/// A pipeline started on `config_text`, with a commit window of `window`.
fn rig(config_text: &str, window: Duration) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(config_text).unwrap();
    let metrics = Arc::new(Metrics::of(&config));
    let store_config = StoreConfig { commit_window: window, ..crate::store::test_config::store_config() };
    let specs = RouteSpec::of(&config);
    let store = Journal::new(dir.path()).open(&store_config, &specs, metrics.clone(), None).unwrap();
    let (control, wiring) =
        RouteControl::new(store.handle.clone(), &config.routes, &config.cloud, metrics.as_ref().into());
    let ingest = Ingest::new(config.routes.clone(), metrics.clone(), Vec::new(), 1)
        .keep_unrouted(config.devices.unrouted == Unrouted::DeadLetter)
        .with_updates(wiring.ingest);
    let (tx, rx) = std_mpsc::channel();
    let handle = store.handle.clone();
    // The device side's loop (devices/embedded.rs, `drain`): publishes as they come, a tick
    // when idle.
    let thread = std::thread::spawn(move || {
        let (_replay_tx, replays) = std_mpsc::channel();
        let mut batcher = Batcher::new(ingest, handle, replays).bounded();
        loop {
            match rx.recv_timeout(crate::pipeline::TICK) {
                Ok(Msg::Publish(topic, payload)) => batcher.push(&topic, &payload, None).unwrap(),
                Ok(Msg::Flush(done)) => {
                    batcher.flush().unwrap();
                    let _ = done.send(());
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => batcher.tick().unwrap(),
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        batcher.flush().unwrap();
    });
    Rig {
        _dir: dir,
        store,
        metrics,
        control,
        forwarder: wiring.forwarder,
        security: wiring.security,
        ingest: Some(tx),
        thread: Some(thread),
    }
}

impl Rig {
    /// Device publishes, handed to the journal's writer (not necessarily committed).
    fn publish(&self, seqs: impl IntoIterator<Item = u32>) {
        let ingest = self.ingest.as_ref().unwrap();
        for seq in seqs {
            let (topic, payload) = publish(seq);
            ingest.send(Msg::Publish(topic, payload)).unwrap();
        }
        let (done, flushed) = std_mpsc::channel();
        ingest.send(Msg::Flush(done)).unwrap();
        flushed.recv().unwrap();
    }

    /// Waits until `slot` has had `rows` rows committed since start.
    async fn committed(&self, slot: RouteIndex, rows: u64) {
        let queues = self.store.handle.committed().clone();
        let wait = async {
            while queues.count(slot) < rows {
                queues.changed().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("slot {slot}: {} rows committed, not {rows}", queues.count(slot)));
    }

    /// The seqs of the rows waiting in `slot`, in queue order (what the forwarder reads).
    async fn seqs(&self, slot: RouteIndex) -> Vec<u32> {
        let rows = self.store.handle.read(slot, 0, 10_000).await.unwrap();
        rows.iter().map(|row| edge_event::decode(&row.payload).unwrap().seq).collect()
    }

    /// The route slots sent to the forwarder so far: `(slot, name, active)`.
    fn forwarder_saw(&mut self) -> Vec<(usize, String, bool)> {
        let mut seen = Vec::new();
        while let Ok(change) = self.forwarder.try_recv() {
            seen.push((change.slot, change.route.name, change.active));
        }
        seen
    }

    fn stop(mut self) {
        drop(self.ingest.take());
        self.thread.take().unwrap().join().unwrap();
        self.store.writer.join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_at_run_time_gets_its_rows_its_journal_row_and_its_metrics() {
    let mut rig = rig(A, Duration::ZERO);
    rig.publish([1]);
    rig.committed(0, 1).await;

    let lines = rig.control.apply_routes(&routes(&format!("{A}{B}")), Unrouted::Count).await.unwrap();
    assert_eq!(lines, vec![r#"route "b" added"#]);
    assert_eq!(rig.store.handle.route("b"), Some(1), "the journal gave it the next slot");
    assert_eq!(rig.forwarder_saw(), vec![(1, "b".to_owned(), true)]);

    rig.publish([2, 3]);
    rig.committed(1, 2).await;
    assert_eq!(rig.seqs(0).await, vec![1, 2, 3]);
    assert_eq!(rig.seqs(1).await, vec![2, 3], "the new route takes the events published after the reload");
    let text = rig.metrics.render(0);
    for series in [
        "edge_gateway_queue_depth{route=\"b\"} 2",
        "edge_gateway_filtered_total{route=\"b\",filter=\"devices\"} 0",
        "edge_gateway_events_forwarded_total{route=\"b\"} 0",
    ] {
        assert!(text.contains(series), "{series} in\n{text}");
    }
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_route_keeps_its_rows_and_forwards_them_when_configured_again() {
    let both = format!("{A}{B}");
    let mut rig = rig(&both, Duration::ZERO);
    rig.publish([1]);
    rig.committed(1, 1).await;

    let lines = rig.control.apply_routes(&routes(A), Unrouted::Count).await.unwrap();
    assert_eq!(
        lines,
        vec![r#"route "b" removed: 1 events kept in the journal until a route named "b" is configured again"#]
    );
    assert_eq!(rig.forwarder_saw(), vec![(1, "b".to_owned(), false)], "the forwarder stops sending it");
    rig.publish([2]);
    rig.committed(0, 2).await;
    assert_eq!(rig.seqs(0).await, vec![1, 2]);
    assert_eq!(rig.seqs(1).await, vec![1], "kept, and nothing new");
    assert!(rig.metrics.render(0).contains("edge_gateway_queue_depth{route=\"b\"} 1"), "its queue stays visible");

    let lines = rig.control.apply_routes(&routes(&both), Unrouted::Count).await.unwrap();
    assert_eq!(lines, vec![r#"route "b" added: its 1 events kept in the journal are forwarded again"#]);
    assert_eq!(rig.forwarder_saw(), vec![(1, "b".to_owned(), true)], "the same slot");
    rig.publish([3]);
    rig.committed(1, 2).await;
    assert_eq!(rig.seqs(1).await, vec![1, 3], "the kept row first, then the new one");
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_in_flight_across_a_removal_is_stored_under_the_route_that_took_it() {
    let both = format!("{A}{B}");
    // A long window: the event is still held by the writer, uncommitted, during the reload.
    let rig = rig(&both, Duration::from_secs(3));
    rig.publish([1]);
    assert_eq!(rig.store.handle.committed().count(1), 0, "not committed yet");
    rig.control.apply_routes(&routes(A), Unrouted::Count).await.unwrap();
    rig.committed(1, 1).await;
    assert_eq!(rig.seqs(1).await, vec![1]);
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_routes_change_are_all_kept_in_order() {
    let both = format!("{A}{B}");
    let rig = Arc::new(rig(A, Duration::from_millis(20)));
    let publisher = {
        let rig = rig.clone();
        std::thread::spawn(move || {
            for seq in 1..=2_000 {
                rig.publish([seq]);
            }
        })
    };
    for round in 0..10 {
        let set = if round % 2 == 0 { both.as_str() } else { A };
        rig.control.apply_routes(&routes(set), Unrouted::Count).await.unwrap();
    }
    tokio::task::spawn_blocking(move || publisher.join().unwrap()).await.unwrap();
    rig.committed(0, 2_000).await;
    assert_eq!(rig.seqs(0).await, (1..=2_000).collect::<Vec<_>>(), "route a: every event, in order");
    let b = rig.seqs(1).await;
    assert!(b.windows(2).all(|w| w[0] < w[1]), "route b: in order");
    let Ok(rig) = Arc::try_unwrap(rig) else { panic!("rig still shared") };
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_route_keeps_its_slot_and_names_the_keys_that_changed() {
    let mut rig = rig(&format!("{A}{B}"), Duration::ZERO);
    let changed = B.replace("up/b", "up/b2") + "[routes.batch]\nmax_events = 7\n";
    let lines = rig.control.apply_routes(&routes(&format!("{A}{changed}")), Unrouted::Count).await.unwrap();
    assert_eq!(lines, vec![r#"route "b" changed: to, batch"#]);
    let mut seen = Vec::new();
    while let Ok(change) = rig.forwarder.try_recv() {
        seen.push((change.slot, change.route.to.clone(), change.route.batch.max_events, change.active));
    }
    let to = routes(&changed)[0].to.clone();
    assert_eq!(seen, vec![(1, to, 7, true)]);
    let again = rig.control.apply_routes(&routes(&format!("{A}{changed}")), Unrouted::Count).await.unwrap();
    assert!(again.is_empty(), "nothing changed: {again:?}");
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_publishes_follow_the_reloaded_setting() {
    let rig = rig(A, Duration::ZERO);
    let other = || Msg::Publish("other/topic".into(), b"{}".to_vec());
    rig.ingest.as_ref().unwrap().send(other()).unwrap();
    rig.publish([]);
    rig.control.apply_routes(&routes(A), Unrouted::DeadLetter).await.unwrap();
    rig.ingest.as_ref().unwrap().send(other()).unwrap();
    rig.publish([]);
    let letters =
        rig.store.handle.dead_letters(crate::store::dead_letters::Query::Page { after: 0, limit: 100 }).await.unwrap();
    assert_eq!(letters.len(), 1, "only the publish after the reload is kept");
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_cloud_credentials_are_handed_to_the_next_connection() {
    let rig = rig(A, Duration::ZERO);
    let base = "[cloud]\nurl = \"mqtt://127.0.0.1:1884\"\nusername = \"gw\"\npassword = \"one\"\n";
    let one = Config::parse(&format!("{base}{A}")).unwrap().cloud;
    let two = Config::parse(&format!("{}{A}", base.replace("one", "two"))).unwrap().cloud;
    assert_eq!(rig.control.apply_cloud(&one), vec!["cloud credentials: used from the next connection"]);
    assert_eq!(rig.security.borrow().password.as_ref().map(|p| p.expose().to_owned()), Some("one".to_owned()));
    assert!(rig.control.apply_cloud(&one).is_empty(), "unchanged");
    assert_eq!(rig.control.apply_cloud(&two).len(), 1);
    assert_eq!(rig.security.borrow().password.as_ref().map(|p| p.expose().to_owned()), Some("two".to_owned()));
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_the_journal_cannot_take_changes_nothing_and_the_next_one_works() {
    let mut rig = rig(A, Duration::ZERO);
    let many: String = (0..=crate::store::SPARE_ROUTE_SLOTS)
        .map(|i| format!("[[routes]]\nname = \"r{i}\"\nfrom = \"other/{i}/+\"\nto = \"up/r{i}\"\n"))
        .collect();
    let err = rig.control.apply_routes(&routes(&format!("{A}{many}")), Unrouted::Count).await.unwrap_err();
    assert!(err.contains("no route slot left") && err.contains("the routes did not change"), "{err}");
    assert!(rig.forwarder_saw().is_empty(), "the forwarder was not told");
    rig.publish([1]);
    rig.committed(0, 1).await;

    // The slots the journal made stay known: r0 is added in its slot, and takes events.
    let r0 = "[[routes]]\nname = \"r0\"\nfrom = \"devices/+/events\"\nto = \"up/r0\"\n";
    let lines = rig.control.apply_routes(&routes(&format!("{A}{r0}")), Unrouted::Count).await.unwrap();
    assert_eq!(lines, vec![r#"route "r0" added"#]);
    assert_eq!(rig.forwarder_saw(), vec![(1, "r0".to_owned(), true)]);
    rig.publish([2]);
    rig.committed(1, 1).await;
    assert_eq!(rig.seqs(1).await, vec![2]);
    assert_eq!(rig.seqs(0).await, vec![1, 2]);
    rig.stop();
}
