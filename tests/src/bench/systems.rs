//! The systems under test, each started fresh for a measurement with its own cloud side:
//!
//! | system | devices publish to | the cloud subscriber listens on |
//! |---|---|---|
//! | Mosquitto alone | Mosquitto | the same Mosquitto |
//! | rumqttd alone | rumqttd (stand-alone process) | the same rumqttd |
//! | Mosquitto bridge | an edge Mosquitto, persistence on, bridged `devices/# out 1` | a cloud Mosquitto |
//! | edge-gateway | the gateway (default config) | a cloud Mosquitto |
//!
//! The two brokers alone are the ceiling on this machine: one hop, nothing stored. The
//! bridge and the gateway do the real job (edge -> cloud, buffering while the cloud is
//! away); when asked, their cloud link goes through a [`Proxy`] that can cut it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::counter::Counter;
use super::load::{self, Load, SendLog};
use super::procs::{vm_mib, GatewayConf, GatewayProc, MosquittoProc};
use super::rumqttd::RumqttdProc;
use crate::mosquitto::Mosquitto;
use crate::proxy::Proxy;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    /// Publisher -> Mosquitto -> subscriber.
    Mosquitto,
    /// Publisher -> rumqttd -> subscriber.
    Rumqttd,
    /// Publisher -> edge Mosquitto -> bridge -> cloud Mosquitto -> subscriber.
    Bridge,
    /// Publisher -> edge-gateway -> cloud Mosquitto -> subscriber.
    Gateway,
}

impl System {
    /// Every system, in table order.
    pub const ALL: [System; 4] = [System::Mosquitto, System::Rumqttd, System::Bridge, System::Gateway];

    /// Key in the JSON output.
    pub fn key(self) -> &'static str {
        match self {
            System::Mosquitto => "baseline_mosquitto",
            System::Rumqttd => "baseline_rumqttd",
            System::Bridge => "mosquitto_bridge",
            System::Gateway => "edge_gateway",
        }
    }

    /// The system of a JSON key made by [`System::key`].
    pub fn from_key(key: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.key() == key)
    }

    /// Column title in the table.
    pub fn title(self) -> &'static str {
        match self {
            System::Mosquitto => "Mosquitto alone",
            System::Rumqttd => "rumqttd alone",
            System::Bridge => "Mosquitto bridge",
            System::Gateway => "edge-gateway",
        }
    }

    /// Parses a name of the command line (`mosquitto`, `rumqttd`, `bridge`, `gateway`).
    pub fn parse(name: &str) -> Option<System> {
        match name {
            "mosquitto" => Some(System::Mosquitto),
            "rumqttd" => Some(System::Rumqttd),
            "bridge" => Some(System::Bridge),
            "gateway" => Some(System::Gateway),
            _ => None,
        }
    }

    /// A broker alone (no edge-to-cloud hop): part of the ceiling.
    pub fn is_baseline(self) -> bool {
        matches!(self, System::Mosquitto | System::Rumqttd)
    }
}

/// How to start a system.
#[derive(Debug, Clone, Default)]
pub struct SutOptions {
    /// Put a cuttable proxy on the edge-to-cloud link (bridge and gateway).
    pub proxy: bool,
    /// The gateway's `max_delay`, when not the default.
    pub max_delay: Option<String>,
    /// The executable that serves rumqttd (`bench serve-rumqttd PORT`).
    pub rumqttd_exe: Option<PathBuf>,
    /// The gateway's devices are this many named users ([`super::load::run_named`]) instead
    /// of the default config's anonymous access.
    pub named_devices: Option<usize>,
}

/// A running system under test, its cloud side and a subscriber counting there.
pub struct Sut {
    /// Which one.
    pub system: System,
    /// Where devices publish.
    pub devices_port: u16,
    /// Counts what reaches the cloud side.
    pub counter: Counter,
    /// The gateway process, for the gateway.
    pub gateway: Option<GatewayProc>,
    /// The Mosquitto the devices talk to: the baseline one, or the bridge's edge.
    pub edge: Option<MosquittoProc>,
    rumqttd: Option<RumqttdProc>,
    proxy: Option<Proxy>,
    /// The cloud broker's port (not the proxy's).
    pub cloud_port: Option<u16>,
    _cloud: Option<Mosquitto>,
    /// The gateway's journal folder.
    pub data: tempfile::TempDir,
    /// Its devices log in as named users ([`SutOptions::named_devices`]).
    named: bool,
}

impl Sut {
    /// Starts `system` and its cloud side, connects the counter, and warms the path up
    /// (a few events end to end, so that every link is established).
    pub async fn start(system: System, options: &SutOptions) -> Result<Sut, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (mut gateway, mut edge, mut rumqttd, mut proxy, mut cloud) = (None, None, None, None, None);
        let (devices_port, cloud_port) = match system {
            System::Mosquitto => {
                let broker = MosquittoProc::start(false, "").await?;
                let port = broker.port;
                edge = Some(broker);
                (port, port)
            }
            System::Rumqttd => {
                let exe = options.rumqttd_exe.as_ref().ok_or("no executable to serve rumqttd")?;
                let broker = RumqttdProc::start(exe).await?;
                let port = broker.port;
                rumqttd = Some(broker);
                (port, port)
            }
            System::Bridge | System::Gateway => {
                let broker = Mosquitto::start();
                let port = broker.port;
                cloud = Some(broker);
                let mut link_port = port;
                if options.proxy {
                    let p = Proxy::start(port).await;
                    link_port = p.port;
                    proxy = Some(p);
                }
                if system == System::Bridge {
                    let broker = MosquittoProc::start(true, &bridge_section(link_port)).await?;
                    let devices = broker.port;
                    edge = Some(broker);
                    (devices, port)
                } else {
                    let mut conf = GatewayConf::new(link_port, data.path(), options.max_delay.as_deref());
                    conf.named_devices = options.named_devices;
                    let (proc, _) = GatewayProc::start(&conf).await?;
                    gateway = Some(proc);
                    (conf.devices_port, port)
                }
            }
        };
        let counter = Counter::connect(cloud_port).await?;
        let sut = Sut {
            named: system == System::Gateway && options.named_devices.is_some(),
            system,
            devices_port,
            counter,
            gateway,
            edge,
            rumqttd,
            proxy,
            cloud_port: cloud.as_ref().map(|c: &Mosquitto| c.port),
            _cloud: cloud,
            data,
        };
        sut.warm_up().await?;
        Ok(sut)
    }

    /// Sends a few events end to end and waits for them.
    pub async fn warm_up(&self) -> Result<(), String> {
        let load = Load::new(1, 10, None);
        self.counter.expect(&load, None);
        if self.named {
            load::run_named(self.devices_port, load, SendLog::new(&load).into(), Arc::new(load::NoAcks)).await?;
        } else {
            load::run(self.devices_port, load, SendLog::new(&load).into()).await?;
        }
        let tally = self.counter.wait(load.total(), Duration::from_secs(40), Duration::from_secs(60)).await;
        if tally.distinct < load.total() {
            return Err(format!(
                "{}: warm-up events did not arrive ({}/{})",
                self.system.title(),
                tally.distinct,
                load.total()
            ));
        }
        Ok(())
    }

    /// The process devices talk to.
    pub fn pid(&self) -> Option<u32> {
        if let Some(g) = &self.gateway {
            return Some(g.pid());
        }
        if let Some(r) = &self.rumqttd {
            return Some(r.pid());
        }
        self.edge.as_ref().map(MosquittoProc::pid)
    }

    /// Its resident memory now, MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        vm_mib(self.pid()?, "VmRSS")
    }

    /// Its peak resident memory so far, MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        vm_mib(self.pid()?, "VmHWM")
    }

    /// Cuts the edge-to-cloud link (needs `proxy`).
    pub fn cut(&self) {
        if let Some(p) = &self.proxy {
            p.cut();
        }
    }

    /// Restores the edge-to-cloud link.
    pub fn restore(&self) {
        if let Some(p) = &self.proxy {
            p.restore();
        }
    }
}

/// The bridge section of the edge Mosquitto: what the issue names (`connection cloud`,
/// `topic devices/# out 1`, `cleansession false`; `max_queued_messages 0` is global), plus
/// a 1 s reconnect delay (`restart_timeout 1 1`) instead of 5..30 s so that the bench stays short (drain is
/// measured from the first event that arrives, so this does not flatter it).
fn bridge_section(cloud_port: u16) -> String {
    format!(
        "connection cloud\naddress 127.0.0.1:{cloud_port}\ntopic devices/# out 1\n\
         cleansession false\nremote_clientid bench-bridge-{}\nrestart_timeout 1 1\n\
         bridge_protocol_version mqttv311\n",
        rand::random::<u32>()
    )
}
