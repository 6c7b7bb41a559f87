//! Device -> broker: packet by packet, checking sizes, MQTT rules and topic rights, holding
//! the device back while the journal is behind ([`crate::devices::inflow`]), and passing on
//! the acknowledgements the gate itself owes the broker for publishes it did not deliver
//! ([`super::deliver`]). A named device's QoS 0 and 1 event publishes do not go to the
//! broker: the gate queues them for ingest itself and owes the device their PUBACKs, which
//! the downlink sends ([`crate::devices::arrivals`]); so that the broker, which then may hear
//! nothing from the device for a long time, does not end the connection, the gate sends it a
//! PINGREQ for the device at half the keep-alive, whose PINGRESP the downlink keeps.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::{may_publish, may_subscribe, Denied, Ended, Gate, Relay};
use crate::devices::arrivals::{Arrival, Publish};
use crate::devices::auth::Identity;
use crate::devices::metrics::{Denial, DeviceDisconnect};
use crate::devices::mqtt::{self, v5, Next};

/// What the device said on its way out.
#[derive(Debug, Default)]
pub(super) struct Farewell {
    /// It sent DISCONNECT (relayed to the broker: relay.rs, rule 1).
    pub said_disconnect: bool,
    /// The Session Expiry Interval its MQTT 5 DISCONNECT set, if any.
    pub session_expiry: Option<u32>,
}

/// What one read of the device's bytes comes to.
#[derive(Default)]
struct Chunk {
    /// Whole packets at the start of the buffer that were handled.
    handled: usize,
    /// Publishes the gate takes itself ([`crate::devices::arrivals`], direct).
    direct: Vec<Publish>,
    /// The PUBACKs it owes the device for them.
    pubacks: Vec<u8>,
    /// The bytes for the broker, when they are not simply `buf[..handled]`.
    relayed: Option<Vec<u8>>,
    /// Publishes handed over either way, and their bytes (for [`crate::devices::inflow`]).
    publishes: u64,
    publish_bytes: u64,
}

impl Chunk {
    /// The packet `buf[at..at + len]` goes to the broker.
    fn relay(&mut self, buf: &[u8], at: usize, len: usize) {
        if let Some(out) = &mut self.relayed {
            out.extend_from_slice(&buf[at..at + len]);
        }
    }

    /// From here on the bytes for the broker differ from the device's: copy what was relayed
    /// (the bytes before `at`) and return the bytes for the broker.
    fn diverge(&mut self, buf: &[u8], at: usize) -> &mut Vec<u8> {
        self.relayed.get_or_insert_with(|| buf[..at].to_vec())
    }
}

/// What happens to one PUBLISH of a named device.
enum Way {
    /// The gate takes it: the publish and its packet id (QoS 1).
    Direct(Publish, Option<u16>),
    /// To the broker, as it is.
    Relay,
    /// To the broker, with the topic its alias stands for.
    RelayAs(Vec<u8>),
}

/// Topic aliases rumqttd advertises (its CONNACK) and the gate resolves for the publishes
/// it takes itself.
const TOPIC_ALIAS_MAX: u16 = 4096;

impl Gate {
    /// Device -> broker until the device or the gate ends the relay. Returns why it ended.
    pub(super) async fn uplink(
        &self,
        mut client: impl AsyncRead + Unpin,
        broker: &mut (impl AsyncWrite + Unpin),
        mut buf: Vec<u8>,
        relay: &Relay<'_>,
        farewell: &mut Farewell,
        owed: &mut mpsc::UnboundedReceiver<[u8; 4]>,
    ) -> Ended {
        let Relay { identity, level, client_id, session_expiry, max_payload: max, keep_alive, pings, to_device } =
            *relay;
        let inflow = &self.settings.inflow;
        // MQTT 5 topic aliases this device set (only for the publishes the gate takes).
        let mut aliases: HashMap<u16, String> = HashMap::new();
        // The broker closes a connection silent for 1.5x its keep-alive: when the gate takes
        // a device's publishes itself, it pings the broker for the device at half of it.
        let ping_every = Duration::from_millis(u64::from(keep_alive) * 500);
        let mut last_to_broker = Instant::now();
        loop {
            let mut chunk = Chunk::default();
            let mut stop = None;
            loop {
                let ok = chunk.handled;
                match mqtt::next(&buf[ok..], max) {
                    Next::Packet(frame) => {
                        if let Some(why) = mqtt::violation(&frame, &buf[ok..], level) {
                            stop = Some(Ended::ByGate(DeviceDisconnect::Protocol, why));
                            break;
                        }
                        let way = match identity {
                            Identity::Device(id) if frame.kind == mqtt::PUBLISH => {
                                self.way(id, &frame, &buf[ok..], level, &mut aliases)
                            }
                            Identity::Device(id) => self.check(id, &frame, &buf[ok..], level).map(|()| Way::Relay),
                            Identity::Anonymous => Ok(Way::Relay),
                        };
                        let way = match way {
                            Ok(way) => way,
                            Err((reason, why)) => {
                                stop = Some(Ended::ByGate(reason, why));
                                break;
                            }
                        };
                        // Counted only once handed on: a refused publish is neither relayed
                        // nor queued, so it would never be taken (inflow.rs).
                        if frame.kind == mqtt::PUBLISH {
                            chunk.publishes += 1;
                            chunk.publish_bytes += frame.len as u64;
                        }
                        match way {
                            Way::Relay => chunk.relay(&buf, ok, frame.len),
                            Way::RelayAs(packet) => chunk.diverge(&buf, ok).extend_from_slice(&packet),
                            Way::Direct(publish, packet_id) => {
                                chunk.diverge(&buf, ok);
                                chunk.direct.push(publish);
                                if let Some(id) = packet_id {
                                    let [hi, lo] = id.to_be_bytes();
                                    chunk.pubacks.extend_from_slice(&[0x40, 0x02, hi, lo]);
                                }
                            }
                        }
                        if frame.kind == mqtt::DISCONNECT {
                            if level == 5 {
                                match v5::disconnect_session_expiry(&buf[ok + frame.body..ok + frame.len]) {
                                    // [MQTT-3.14.2-2]: 0 at CONNECT cannot become more.
                                    Ok(Some(e)) if e > 0 && session_expiry == 0 => {
                                        let why = "a DISCONNECT setting a session expiry after CONNECT set none \
                                                   [MQTT-3.14.2-2]";
                                        stop = Some(Ended::ByGate(DeviceDisconnect::Protocol, why.into()));
                                        break;
                                    }
                                    Ok(expiry) => farewell.session_expiry = expiry,
                                    Err(why) => {
                                        stop = Some(Ended::ByGate(DeviceDisconnect::Protocol, why));
                                        break;
                                    }
                                }
                            }
                            // Nothing after it goes to the broker (relay.rs, rule 1).
                            chunk.handled += frame.len;
                            stop = Some(Ended::Disconnect);
                            break;
                        }
                        chunk.handled += frame.len;
                    }
                    Next::Incomplete => break,
                    Next::TooLarge { kind, remaining } => {
                        self.metrics.devices.too_large.add(1);
                        if let Some(suppressed) = self.denial_log.lock().ok().and_then(|mut log| log.allow()) {
                            warn!(
                                client_id,
                                packet_type = kind,
                                bytes = remaining,
                                max_payload = max,
                                suppressed,
                                "device packet over devices.max_payload; device disconnected"
                            );
                        }
                        let why = format!("a packet of {remaining} bytes, over devices.max_payload");
                        stop = Some(Ended::ByGate(DeviceDisconnect::TooLarge, why));
                        break;
                    }
                    Next::Malformed => {
                        stop = Some(Ended::ByGate(DeviceDisconnect::Protocol, "malformed MQTT".into()));
                        break;
                    }
                }
            }
            let handled = chunk.handled;
            if handled > 0 {
                // The journal is behind and a lot waits unread: hold this device back (its
                // TCP and inflight windows fill) rather than let the broker overwrite unread
                // events or the ingest queue grow.
                if chunk.publishes > 0 && inflow.wait_for_room().await {
                    self.metrics.devices.backpressure.add(1);
                }
                inflow.forwarded(chunk.publishes, chunk.publish_bytes);
                if !chunk.direct.is_empty() {
                    if self.settings.queue.send(Arrival::Direct(std::mem::take(&mut chunk.direct))).is_err() {
                        // The ingest thread is gone: the gateway is stopping.
                        return Ended::Broker;
                    }
                    if !chunk.pubacks.is_empty() {
                        let _ = to_device.send(std::mem::take(&mut chunk.pubacks));
                    }
                    // Only the gate hears from the device now: keep the broker's keep-alive.
                    if last_to_broker.elapsed() >= ping_every && !matches!(stop, Some(Ended::Disconnect)) {
                        let relayed = chunk.relayed.get_or_insert_with(Vec::new);
                        relayed.splice(0..0, [mqtt::PINGREQ << 4, 0]);
                        pings.fetch_add(1, Ordering::AcqRel);
                    }
                }
                let to_broker = chunk.relayed.as_deref().unwrap_or(&buf[..handled]);
                if !to_broker.is_empty() {
                    if broker.write_all(to_broker).await.is_err() {
                        return Ended::Broker;
                    }
                    last_to_broker = Instant::now();
                }
                farewell.said_disconnect = matches!(stop, Some(Ended::Disconnect));
                buf.drain(..handled);
            }
            if let Some(why) = stop {
                return why;
            }
            // Small reads keep the per-connection buffer small (a thousand idle devices must
            // not cost a thousand large buffers); it grows only for a packet that needs it
            // and gives the room back once that packet has gone.
            if buf.is_empty() && buf.capacity() > 32 * 1024 {
                buf.shrink_to(8 * 1024);
            }
            if buf.capacity() - buf.len() < 2 * 1024 {
                buf.reserve(8 * 1024);
            }
            // Both are cancel-safe: a read that loses the race has read nothing, and an
            // acknowledgement goes between whole packets.
            tokio::select! {
                read = client.read_buf(&mut buf) => match read {
                    Ok(0) => return Ended::DeviceClosed,
                    Ok(_) => {}
                    Err(err) => {
                        tracing::debug!(client_id, error = %err, "device read error");
                        return Ended::DeviceClosed;
                    }
                },
                Some(ack) = owed.recv() => {
                    if broker.write_all(&ack).await.is_err() {
                        return Ended::Broker;
                    }
                    last_to_broker = Instant::now();
                }
            }
        }
    }

    /// Where a named device's PUBLISH goes: its QoS 0 and 1 event publishes to ingest
    /// directly; QoS 2 (whose PUBREL the broker must see) and its command status (which the
    /// downlink takes from the broker) to the broker. Err: refused, with the reason.
    fn way(
        &self,
        id: &str,
        frame: &mqtt::Frame,
        packet: &[u8],
        level: u8,
        aliases: &mut HashMap<u16, String>,
    ) -> Result<Way, (DeviceDisconnect, String)> {
        let protocol = |why: String| (DeviceDisconnect::Protocol, why);
        let view = mqtt::publish_view(frame, packet, level).map_err(protocol)?;
        if let Some(alias) = view.topic_alias.filter(|alias| *alias == 0 || *alias > TOPIC_ALIAS_MAX) {
            return Err(protocol(format!("a Topic Alias of {alias}, outside 1..={TOPIC_ALIAS_MAX} [MQTT-3.3.2-8]")));
        }
        let topic = match view.topic_alias {
            Some(alias) if view.topic.is_empty() => match aliases.get(&alias) {
                Some(topic) => topic.clone(),
                None => return Err(protocol(format!("a Topic Alias {alias} that was never set [MQTT-3.3.2-9]"))),
            },
            Some(alias) => {
                aliases.insert(alias, view.topic.to_owned());
                view.topic.to_owned()
            }
            None => view.topic.to_owned(),
        };
        if !may_publish(id, &topic) {
            return Err(self.refuse_publish(id, &topic, view.payload));
        }
        if view.qos == 2 || crate::devices::is_gateway_to_device(&topic) {
            return Ok(if view.topic.is_empty() {
                Way::RelayAs(mqtt::publish_with_topic(frame, packet, &topic))
            } else {
                Way::Relay
            });
        }
        Ok(Way::Direct(Publish { topic, payload: view.payload.to_vec() }, view.packet_id))
    }

    /// Whether device `id` may send this packet (other than a PUBLISH: [`Gate::way`]); a
    /// refusal is counted and logged.
    fn check(&self, id: &str, frame: &mqtt::Frame, packet: &[u8], level: u8) -> Result<(), (DeviceDisconnect, String)> {
        if frame.kind != mqtt::SUBSCRIBE {
            return Ok(());
        }
        let filters = mqtt::subscribe_filters(frame, packet, level).map_err(|why| (DeviceDisconnect::Protocol, why))?;
        let Some(bad) = filters.iter().find(|f| !may_subscribe(id, f)) else { return Ok(()) };
        let reason = format!(
            "device {id:?} may not subscribe to {bad:?}: only devices/{id}/ack and devices/{id}/commands; \
             the device was disconnected"
        );
        Err(self.deny(id, Denial::Subscribe, reason))
    }

    /// Refuses device `id`'s publish on `topic`: counted, logged, and handed over as a dead
    /// letter with the reason.
    fn refuse_publish(&self, id: &str, topic: &str, payload: &[u8]) -> (DeviceDisconnect, String) {
        let reason = format!(
            "device {id:?} may not publish on {topic:?}: a device publishes only under devices/{id}/ \
             (not on its ack or commands topics); the device was disconnected"
        );
        let _ = self.denied.try_send(Denied::by(id, topic.to_owned(), payload.to_vec(), reason.clone()));
        self.deny(id, Denial::Publish, reason)
    }

    fn deny(&self, id: &str, denial: Denial, reason: String) -> (DeviceDisconnect, String) {
        self.metrics.devices.denied[denial as usize].add(1);
        if let Some(suppressed) = self.denial_log.lock().ok().and_then(|mut log| log.allow()) {
            warn!(device = id, action = denial.label(), %reason, suppressed, "device denied");
        }
        (DeviceDisconnect::Denied, reason)
    }
}
