//! Device -> broker: packet by packet, checking sizes, MQTT rules and topic rights, holding
//! the device back while the journal is behind ([`crate::devices::inflow`]), and passing on
//! the acknowledgements the gate itself owes the broker for publishes it did not deliver
//! ([`super::deliver`]).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::{may_publish, may_subscribe, Denied, Ended, Gate, Relay};
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
        let Relay { identity, level, client_id, session_expiry, max_payload: max } = *relay;
        let inflow = &self.settings.inflow;
        loop {
            let mut ok = 0;
            let mut stop = None;
            let (mut publishes, mut publish_bytes) = (0u64, 0u64);
            loop {
                match mqtt::next(&buf[ok..], max) {
                    Next::Packet(frame) => {
                        if let Some(why) = mqtt::violation(&frame, &buf[ok..], level) {
                            stop = Some(Ended::ByGate(DeviceDisconnect::Protocol, why));
                            break;
                        }
                        if let Identity::Device(id) = identity {
                            if let Err((reason, why)) = self.check(id, &frame, &buf[ok..], level) {
                                stop = Some(Ended::ByGate(reason, why));
                                break;
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
                            ok += frame.len;
                            stop = Some(Ended::Disconnect);
                            break;
                        }
                        if frame.kind == mqtt::PUBLISH {
                            publishes += 1;
                            publish_bytes += frame.len as u64;
                        }
                        ok += frame.len;
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
            if ok > 0 {
                // The journal is behind and the broker holds a lot unread: hold this device
                // back (its TCP and inflight windows fill) rather than let the broker
                // overwrite unread events.
                if publishes > 0 && inflow.wait_for_room().await {
                    self.metrics.devices.backpressure.add(1);
                }
                if broker.write_all(&buf[..ok]).await.is_err() {
                    return Ended::Broker;
                }
                farewell.said_disconnect = matches!(stop, Some(Ended::Disconnect));
                inflow.forwarded(publishes, publish_bytes);
                buf.drain(..ok);
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
                }
            }
        }
    }

    /// Whether device `id` may send this packet; a refusal is counted, logged and (for a
    /// publish) handed over as a dead letter.
    fn check(&self, id: &str, frame: &mqtt::Frame, packet: &[u8], level: u8) -> Result<(), (DeviceDisconnect, String)> {
        let malformed = |why: String| (DeviceDisconnect::Protocol, why);
        let (denial, reason) = match frame.kind {
            mqtt::PUBLISH => {
                let topic = mqtt::publish_topic(frame, packet).map_err(malformed)?;
                // An MQTT 5 publish by topic alias: the alias was set by an earlier publish
                // on this connection, whose topic passed this check.
                if may_publish(id, topic) || (topic.is_empty() && level == 5) {
                    return Ok(());
                }
                let reason = format!(
                    "device {id:?} may not publish on {topic:?}: a device publishes only under devices/{id}/ \
                     (not on its ack or commands topics); the device was disconnected"
                );
                if let Ok((topic, payload)) = mqtt::publish(frame, packet, level) {
                    let _ = self.denied.try_send(Denied::by(id, topic, payload, reason.clone()));
                }
                (Denial::Publish, reason)
            }
            mqtt::SUBSCRIBE => {
                let filters = mqtt::subscribe_filters(frame, packet, level).map_err(malformed)?;
                let Some(bad) = filters.iter().find(|f| !may_subscribe(id, f)) else { return Ok(()) };
                let reason = format!(
                    "device {id:?} may not subscribe to {bad:?}: only devices/{id}/ack and devices/{id}/commands; \
                     the device was disconnected"
                );
                (Denial::Subscribe, reason)
            }
            _ => return Ok(()),
        };
        self.metrics.devices.denied[denial as usize].add(1);
        if let Some(suppressed) = self.denial_log.lock().ok().and_then(|mut log| log.allow()) {
            warn!(device = id, action = denial.label(), %reason, suppressed, "device denied");
        }
        Err((DeviceDisconnect::Denied, reason))
    }
}
