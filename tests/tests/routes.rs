//! Routes end to end: fan-out to several routes, and each filter rule (devices/types,
//! range, min_interval with keep_last, deadband) against the real binary and a real cloud.

use std::time::Duration;

use edge_tests::clients::{publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{http, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// A JSON event with one reading.
fn reading(device: &str, seq: u32, kind: &str, name: &str, value: f64) -> (String, Vec<u8>) {
    let json =
        format!(r#"{{"device":"{device}","boot":1,"seq":{seq},"type":"{kind}","readings":{{"{name}":{value:?}}}}}"#);
    (format!("devices/{device}/events"), json.into_bytes())
}

fn route(name: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nfrom = \"devices/{{device}}/events\"\nto = \"gateways/{{route}}\"\n\
         batch = {{ max_events = 100, max_delay = \"10ms\" }}\n{extra}\n"
    )
}

fn filtered(http_port: u16, route: &str, filter: &str) -> f64 {
    let series = format!("edge_gateway_filtered_total{{route=\"{route}\",filter=\"{filter}\"}}");
    http::metric(http_port, &series).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_fans_out_to_every_matching_route_and_each_route_applies_its_rules() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = [
        route("all", ""),
        route("kitchen", "devices = [\"kitchen-*\"]\ntypes = [\"temp*\"]"),
        route("sane", "min = { celsius = -40.0 }\nmax = { celsius = 85.0 }"),
    ]
    .concat();
    let gateway = Gateway::start(&setup);
    let events = vec![
        reading("kitchen-1", 1, "temperature", "celsius", 21.5),
        reading("kitchen-1", 2, "door", "open", 1.0),
        reading("hall", 1, "temperature", "celsius", 19.0),
        reading("hall", 2, "temperature", "celsius", 999.0),
    ];
    publish_all(setup.devices_port, "mixed", events).await.unwrap();
    // all: 4; kitchen: 1; sane: 3 (the 999 is out of range; the door has no celsius).
    let got = sub.wait_distinct(4, WAIT);
    wait_until(WAIT, "8 rows forwarded", || {
        let s = gateway.status();
        let total: u64 = s["routes"].as_array()?.iter().map(|r| r["forwarded"].as_u64().unwrap_or(0)).sum();
        (total == 8).then_some(())
    });
    let status = gateway.status();
    let forwarded: Vec<u64> =
        status["routes"].as_array().unwrap().iter().map(|r| r["forwarded"].as_u64().unwrap()).collect();
    assert_eq!(forwarded, vec![4, 1, 3], "{status}");
    assert_eq!(got.distinct().len(), 4);
    assert_eq!(filtered(setup.http_port, "kitchen", "devices"), 2.0);
    assert_eq!(filtered(setup.http_port, "kitchen", "types"), 1.0);
    assert_eq!(filtered(setup.http_port, "sane", "range"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_interval_downsamples_and_keep_last_still_delivers_the_latest_value() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = route("slow", "min_interval = \"3s\"\nkeep_last = true");
    let gateway = Gateway::start(&setup);
    let burst: Vec<_> = (1..=50).map(|seq| reading("s1", seq, "temperature", "celsius", f64::from(seq))).collect();
    publish_all(setup.devices_port, "s1", burst).await.unwrap();
    // The first passes at once; the other 49 come within the 3 s interval: only the newest of
    // them (seq 50) is forwarded when the interval ends.
    let got = sub.wait_distinct(2, WAIT);
    let seqs: Vec<u32> = got.events.iter().map(|(_, _, s)| *s).collect();
    assert_eq!(seqs, vec![1, 50], "first and latest");
    assert_eq!(filtered(setup.http_port, "slow", "min_interval"), 49.0);
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadband_state_survives_a_restart() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = route("changes", "deadband = { celsius = 1.0 }");
    let mut gateway = Gateway::start(&setup);
    let first = vec![
        reading("t1", 1, "temperature", "celsius", 20.0),
        reading("t1", 2, "temperature", "celsius", 20.5),
        reading("t1", 3, "temperature", "celsius", 21.0),
    ];
    publish_all(setup.devices_port, "t1", first).await.unwrap();
    let got = sub.wait_distinct(2, WAIT);
    assert_eq!(got.events.iter().map(|e| e.2).collect::<Vec<_>>(), vec![1, 3]);
    gateway.terminate();

    let gateway = Gateway::start(&setup);
    // 21.9 is within 1.0 of the last forwarded 21.0: dropped even after the restart.
    let second =
        vec![reading("t1", 4, "temperature", "celsius", 21.9), reading("t1", 5, "temperature", "celsius", 22.0)];
    publish_all(setup.devices_port, "t1", second).await.unwrap();
    let got = sub.wait_distinct(3, WAIT);
    assert_eq!(got.events.iter().map(|e| e.2).collect::<Vec<_>>(), vec![1, 3, 5]);
    assert_eq!(filtered(setup.http_port, "changes", "deadband"), 1.0);
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_the_shelf_json_from_zigbee2mqtt_and_shelly_becomes_numbered_events() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = [
        "[[routes]]\nname = \"zigbee\"\nfrom = \"zigbee2mqtt/{device}\"\nto = \"gateways/zigbee\"\ninput = \"json-fields\"\n\
         fields = { temperature = \"celsius\", humidity = \"rh\", pressure = \"hpa\", battery = \"battery\" }\n",
        "[[routes]]\nname = \"shelly\"\nfrom = \"shellies/{device}/sensor/temperature\"\nto = \"gateways/shelly\"\n\
         input = \"json-fields\"\nevent_type = \"temperature\"\n",
    ]
    .concat();
    let mut gateway = Gateway::start(&setup);
    // Captured from an Aqara WSDCGQ11LM through zigbee2mqtt, and a Shelly H&T.
    let aqara = br#"{"battery":100,"humidity":58.63,"linkquality":78,"power_outage_count":6,"pressure":1005.6,"temperature":22.46,"voltage":3025}"#;
    let messages = vec![
        ("zigbee2mqtt/living-room".to_owned(), aqara.to_vec()),
        ("zigbee2mqtt/living-room".to_owned(), aqara.to_vec()),
        ("shellies/shellyht-AB12/sensor/temperature".to_owned(), b"21.5".to_vec()),
        ("zigbee2mqtt/living-room".to_owned(), b"{\"state\":\"ON\"}".to_vec()),
    ];
    publish_all(setup.devices_port, "bridge", messages).await.unwrap();
    let got = sub.wait_distinct(3, WAIT);
    let living: Vec<&serde_json::Value> = got.raw.iter().filter(|e| e["device"] == "living-room").collect();
    assert_eq!(living.len(), 2);
    assert_eq!(living[0]["type"], "zigbee");
    assert_eq!(living[0]["readings"]["celsius"], 22.46);
    assert_eq!(living[0]["readings"]["hpa"], 1005.6);
    assert_eq!(living[0]["readings"]["battery"], 100);
    assert!(living[0]["readings"].get("linkquality").is_none(), "only the listed fields");
    assert_eq!((living[0]["seq"].as_u64(), living[1]["seq"].as_u64()), (Some(1), Some(2)));
    let shelly = got.raw.iter().find(|e| e["device"] == "shellyht-AB12").expect("shelly event");
    assert_eq!(shelly["readings"]["value"], 21.5);
    assert_eq!(shelly["type"], "temperature");
    wait_until(WAIT, "the text-only payload as a dead letter", || {
        (gateway.status()["dead_letters"] == 1).then_some(())
    });
    let boot = living[0]["boot"].as_u64().unwrap();
    gateway.terminate();

    // After a restart the gateway numbers under a new boot, so nothing is taken for a retransmit.
    let _gateway = Gateway::start(&setup);
    publish_all(setup.devices_port, "bridge", vec![("zigbee2mqtt/living-room".to_owned(), aqara.to_vec())])
        .await
        .unwrap();
    let got = sub.wait_distinct(4, WAIT);
    let last = got.raw.iter().rfind(|e| e["device"] == "living-room").unwrap();
    assert_eq!((last["boot"].as_u64(), last["seq"].as_u64()), (Some(boot + 1), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_outage_higher_priority_drains_first_and_lower_priority_is_not_starved() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = edge_tests::proxy::Proxy::start(cloud.port).await;
    link.cut();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(link.port, data.path());
    setup.routes = "[[routes]]\nname = \"bulk\"\nfrom = \"devices/{device}/events\"\nto = \"gateways/bulk\"\n\
         batch = { max_events = 100 }\n\
         [[routes]]\nname = \"alerts\"\nfrom = \"devices/{device}/alerts\"\nto = \"gateways/alerts\"\n\
         batch = { max_events = 100 }\npriority = 4\n"
        .into();
    let gateway = Gateway::start(&setup);
    let bulk: Vec<_> = (1..=5000).map(|seq| reading("bulk", seq, "t", "v", 1.0)).collect();
    let alerts: Vec<_> = (1..=2000)
        .map(|seq| {
            let (_, payload) = reading("alarm", seq, "alert", "level", 3.0);
            ("devices/alarm/alerts".to_owned(), payload)
        })
        .collect();
    publish_all(setup.devices_port, "bulk", bulk).await.unwrap();
    publish_all(setup.devices_port, "alarm", alerts).await.unwrap();
    wait_until(WAIT, "the backlog committed", || (gateway.status()["events_committed"] == 7000).then_some(()));

    link.restore();
    let got = sub.wait_distinct(7000, WAIT);
    let devices: Vec<&str> = got.events.iter().map(|(d, _, _)| d.as_str()).collect();
    let last_alert = devices.iter().rposition(|d| *d == "alarm").unwrap();
    let bulk_before = devices[..last_alert].iter().filter(|d| **d == "bulk").count();
    let last_bulk = devices.iter().rposition(|d| *d == "bulk").unwrap();
    println!("when the last alert arrived, {bulk_before} of 5000 bulk events had");
    assert!(last_alert < last_bulk, "alerts (priority 4) finish first");
    assert!(bulk_before > 0, "bulk is not starved while alerts drain");
    assert!(bulk_before < 2500, "bulk gets about a fifth of the window, not half: {bulk_before}");
    got.in_order_per_device().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_max_age_drops_stale_alerts_while_other_routes_keep_theirs() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = edge_tests::proxy::Proxy::start(cloud.port).await;
    link.cut();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(link.port, data.path());
    setup.routes = "[[routes]]\nname = \"billing\"\nfrom = \"devices/{device}/events\"\nto = \"gateways/billing\"\n\
         [[routes]]\nname = \"alerts\"\nfrom = \"devices/{device}/alerts\"\nto = \"gateways/alerts\"\nmax_age = \"1s\"\n"
        .into();
    let gateway = Gateway::start(&setup);
    let billing: Vec<_> = (1..=100).map(|seq| reading("meter", seq, "energy", "kwh", 1.0)).collect();
    let alerts: Vec<_> = (1..=100)
        .map(|seq| ("devices/alarm/alerts".to_owned(), reading("alarm", seq, "alert", "level", 3.0).1))
        .collect();
    publish_all(setup.devices_port, "meter", billing).await.unwrap();
    publish_all(setup.devices_port, "alarm", alerts).await.unwrap();
    wait_until(WAIT, "the stale alerts dropped", || (gateway.status()["dropped"]["ttl"] == 100).then_some(()));
    assert_eq!(gateway.status()["routes"][0]["queue_depth"], 100, "billing keeps its events");
    assert_eq!(gateway.status()["routes"][1]["queue_depth"], 0);
    link.restore();
    let got = sub.wait_distinct(100, WAIT);
    assert!(got.events.iter().all(|(d, _, _)| d == "meter"), "no stale alert reaches the cloud");
    assert!(gateway.log_text().contains("older than their max_age"), "the drop is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_no_route_takes_are_counted_and_kept_as_dead_letters_when_asked() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices = "unrouted = \"dead_letter\"\n".into();
    let gateway = Gateway::start(&setup);
    let messages = vec![
        ("devices/d1/status".to_owned(), b"online".to_vec()),
        ("random/topic".to_owned(), b"{}".to_vec()),
        reading("d1", 1, "t", "v", 1.0),
    ];
    publish_all(setup.devices_port, "d1", messages).await.unwrap();
    sub.wait_distinct(1, WAIT);
    wait_until(WAIT, "2 unrouted dead letters", || (gateway.status()["dead_letters"] == 2).then_some(()));
    assert_eq!(gateway.status()["dropped"]["no_route"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_and_compressed_batches_are_named_in_the_topic_and_decode_to_the_events() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use std::io::Read;

    let cloud = Mosquitto::start();
    let mut options = MqttOptions::new("raw-cloud-sub", "127.0.0.1", cloud.port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe("gateways/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.unwrap() {
            break;
        }
    }
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes =
        [route("pz", "format = \"postcard\"\ncompress = \"zstd\""), route("jl", "compress = \"lz4\"")].concat();
    let _gateway = Gateway::start(&setup);
    let events: Vec<_> = (1..=20).map(|seq| reading("c1", seq, "temperature", "celsius", 20.0)).collect();
    publish_all(setup.devices_port, "c1", events).await.unwrap();

    let mut postcard_seqs = Vec::new();
    let mut json_seqs = Vec::new();
    while postcard_seqs.len() < 20 || json_seqs.len() < 20 {
        let event = tokio::time::timeout(WAIT, eventloop.poll()).await.expect("batches arrive").unwrap();
        let Event::Incoming(Packet::Publish(publish)) = event else { continue };
        match publish.topic.as_str() {
            "gateways/pz/postcard.zstd" => {
                let body = zstd::bulk::decompress(&publish.payload, 1 << 20).unwrap();
                let batch = edge_event::batch::decode_batch(&body).unwrap();
                assert_eq!((batch.gateway.as_str(), batch.route.as_str()), ("gw-test", "pz"));
                postcard_seqs.extend(batch.events.iter().map(|e| e.seq));
            }
            "gateways/jl/json.lz4" => {
                let mut body = Vec::new();
                lz4_flex::frame::FrameDecoder::new(&publish.payload[..]).read_to_end(&mut body).unwrap();
                let batch: serde_json::Value = serde_json::from_slice(&body).unwrap();
                json_seqs.extend(batch["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap() as u32));
            }
            other => panic!("unexpected topic {other}"),
        }
    }
    assert_eq!(postcard_seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(json_seqs, (1..=20).collect::<Vec<_>>());
}
