//! The device: numbering, the retention ring and the MQTT client, driven by one
//! non-blocking [`Device::poll`].
//!
//! # Protocol
//!
//! 1. Offline: at the retry time, open the transport and send CONNECT (clean session,
//!    client id = device id; with a [`Settings::password`], the user name (default: the
//!    device id) and the password). A refused login (CONNACK 4 or 5) is
//!    [`Error::Refused`], retried with the backoff like any link error.
//! 2. CONNACK accepted: SUBSCRIBE to `devices/{device}/ack` and `devices/{device}/commands`
//!    (QoS 1). The gateway's ack is retained, so a reconnecting device learns its mark at
//!    once.
//! 3. SUBACK: online. Say `Ready` on `devices/{device}/commands/status` (the gateway then
//!    sends a waiting command at once). Publish every unconfirmed event on `devices/{device}/events`, oldest
//!    first, at most `max_inflight` QoS 1 publishes awaiting their PUBACK at a time.
//! 4. Each ack `{"boot":B,"seq":S}` releases the events it covers from the ring (see
//!    [`Ring::confirm`]); a PUBACK only opens the send window.
//! 5. Any link error, a missing CONNACK/SUBACK after `response_timeout_ms`, or a missed
//!    PINGRESP: drop the link, rewind the ring, retry after a backoff that doubles from
//!    `retry_min_ms` to `retry_max_ms` (with jitter, so a fleet does not reconnect in
//!    lockstep after a gateway restart). The backoff resets only once a session has stayed
//!    up for `stable_after_ms`, not at the SUBACK: a session that some message kills right
//!    after subscribing must not turn into a reconnect storm that re-sends every pending
//!    event ten times a second. An incoming packet larger than the receive buffer is
//!    skipped and counted ([`Stats::oversized`]), never a reason to drop the session.
//!
//! 6. A command on `devices/{device}/commands` (see [`edge_event::command`]): answer
//!    `Delivered`, run the handler of [`Device::poll_commands`], answer `Done` or `Failed`
//!    (both QoS 1). A repeated command id is answered from memory, not run again.
//!
//! # Invariant
//!
//! An event recorded with [`Device::publish`] stays in the ring, and is published again
//! after every reconnect, until an ack covers it or the full policy drops it (counted in
//! [`Stats::dropped`]). Re-sends are safe: within a boot, the gateway drops an event whose
//! seq is not above its committed mark.

use edge_event::command::{Command, Reply, ReplyStatus, MAX_REPLY_LEN};
use edge_event::topic::{self, Topic, MAX_TOPIC_LEN};
use edge_event::{Ack, Event, MAX_ENCODED_LEN};

use crate::command::{Outcome, Recent};
use crate::retention::Retention;

use crate::error::Error;
use crate::mqtt::packet::{Connect, Packet, MAX_FIXED_HEADER_LEN};
use crate::mqtt::{Client, QoS};
use crate::numbering::{timestamp, BootId, Clock, EventId, Numbering};
use crate::ring::Ring;

mod settings;

use crate::transport::Transport;
pub use settings::{Activity, Password, Settings, Stats};

/// What the device does with a message on its commands topic: the raw bytes and the
/// command decoded from them (None if they are not one); an outcome is answered.
type OnCommand<'a> = dyn FnMut(&[u8], Option<&Command<'_>>) -> Option<Outcome> + 'a;

/// Transmit buffer of a device: the largest event publish (fixed header, topic, packet
/// id, the largest encoded event).
pub const TX_LEN: usize = MAX_FIXED_HEADER_LEN + 2 + MAX_TOPIC_LEN + 2 + MAX_ENCODED_LEN;

/// Default receive buffer: the largest command (or other packet) the device accepts.
pub const DEFAULT_RX_LEN: usize = 256;

/// Most packets one poll takes from the broker.
const MAX_PACKETS_PER_POLL: usize = 64;

/// Room an event publish leaves in a bounded transport for the acks and replies of a poll.
const TX_HEADROOM: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Offline { retry_at: u64 },
    Connecting { since: u64 },
    Subscribing { since: u64 },
    Online { since: u64 },
}

/// A sensor device: builds and numbers events, keeps them until the gateway confirms
/// them, and speaks MQTT over `T`. `SLOTS` and `BYTES` size the RAM ring, `RX` the
/// receive buffer; `R` is where unconfirmed events live (the RAM [`Ring`] by default, or
/// any [`Retention`], e.g. the `flash` feature's `FlashRing`, whose devices ignore `SLOTS`
/// and `BYTES`). See the crate README for the memory this takes.
#[derive(Debug)]
pub struct Device<
    T,
    C,
    const SLOTS: usize,
    const BYTES: usize,
    const RX: usize = DEFAULT_RX_LEN,
    R = Ring<SLOTS, BYTES>,
> {
    numbering: Numbering,
    ring: R,
    client: Client<T, RX, TX_LEN>,
    clock: C,
    settings: Settings,
    events_topic: Topic,
    ack_topic: Topic,
    commands_topic: Topic,
    status_topic: Topic,
    recent: Recent,
    link: Link,
    retry_ms: u32,
    jitter: u32,
    stats: Stats,
}

impl<T: Transport, C: Clock, const SLOTS: usize, const BYTES: usize, const RX: usize> Device<T, C, SLOTS, BYTES, RX> {
    /// A device `device` in boot `boot` with a RAM ring, offline until the first
    /// [`Device::poll`].
    pub fn new(device: &str, boot: BootId, transport: T, clock: C, settings: Settings) -> Result<Self, Error> {
        Device::with_retention(device, boot, transport, clock, settings, Ring::new(settings.when_full))
    }
}

impl<T: Transport, C: Clock, const SLOTS: usize, const BYTES: usize, const RX: usize, R: Retention>
    Device<T, C, SLOTS, BYTES, RX, R>
{
    /// A device `device` in boot `boot` keeping its unconfirmed events in `retention`
    /// (which may already hold some from before a reset: they are sent first, with their
    /// own `(boot, seq)`). `settings.when_full` is the RAM ring's; `retention` has its own.
    pub fn with_retention(
        device: &str,
        boot: BootId,
        transport: T,
        clock: C,
        settings: Settings,
        retention: R,
    ) -> Result<Self, Error> {
        let numbering = Numbering::new(device, boot)?;
        let mut events_topic = Topic::new();
        let mut ack_topic = Topic::new();
        let mut commands_topic = Topic::new();
        let mut status_topic = Topic::new();
        topic::write_events_topic(device, &mut events_topic)
            .and_then(|()| topic::write_ack_topic(device, &mut ack_topic))
            .and_then(|()| topic::write_commands_topic(device, &mut commands_topic))
            .and_then(|()| topic::write_command_status_topic(device, &mut status_topic))?;
        let jitter = device.bytes().fold(boot.get() | 1, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        Ok(Device {
            numbering,
            ring: retention,
            client: Client::new(transport),
            clock,
            settings,
            events_topic,
            ack_topic,
            commands_topic,
            status_topic,
            recent: Recent::default(),
            link: Link::Offline { retry_at: 0 },
            retry_ms: settings.retry_min_ms,
            jitter: jitter | 1,
            stats: Stats::default(),
        })
    }

    /// A new event of this device, stamped with the clock (if it knows the time), to
    /// fill with readings and hand to [`Device::publish`].
    pub fn event(&mut self, kind: &str) -> Result<Event, Error> {
        let ts = timestamp(&mut self.clock);
        self.numbering.event(kind, ts)
    }

    /// Numbers `event` (this device, this boot, the next seq), checks it as the gateway
    /// will ([`Error::Invalid`]: a NaN reading, a duplicate name, a bad type), encodes it
    /// into the ring, and returns its id; the next polls send it. With
    /// [`WhenFull::RefuseNew`] a full ring is [`Error::RingFull`]. On any error the event
    /// is not kept and its seq is not used up.
    pub fn publish(&mut self, event: &mut Event) -> Result<EventId, Error> {
        let id = self.numbering.stamp(event)?;
        event.validate(None)?;
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let len = crate::numbering::encode_stored(event, &mut self.clock, &mut buf)?;
        let dropped = self.ring.dropped();
        self.ring.push(id, buf.get(..len).unwrap_or_default())?;
        self.numbering.advance();
        self.stats.recorded += 1;
        self.stats.dropped += self.ring.dropped() - dropped;
        Ok(id)
    }

    /// Does whatever is due at `now_ms` (a monotonic clock in ms): connect, read, apply
    /// acks, publish unconfirmed events, keep alive. Never blocks. An error is also
    /// reported here, but the device has already dealt with it (if [`Error::is_link`],
    /// by scheduling a reconnect): keep polling.
    pub fn poll(&mut self, now_ms: u64) -> Result<Activity, Error> {
        self.poll_with(now_ms, |_| {})
    }

    /// Like [`Device::poll`], handing every message on the commands topic, raw, to
    /// `on_command`; nothing is answered (see [`Device::poll_commands`] for that).
    pub fn poll_with(&mut self, now_ms: u64, mut on_command: impl FnMut(&[u8])) -> Result<Activity, Error> {
        self.poll_inner(now_ms, &mut |raw, _| {
            on_command(raw);
            None
        })
    }

    /// Like [`Device::poll`], running `handler` on every new command and answering it:
    /// `Delivered` before the handler runs, then its [`Outcome`] (`Done`/`Failed`). A
    /// command whose deadline has passed by the device's [`Clock`] fails without running;
    /// a repeated command id is answered with the remembered outcome.
    ///
    /// ```
    /// # use edge_firmware::{BootId, Device, NoClock, Outcome, Settings, Transport, TransportError};
    /// # struct Uart;
    /// # impl Transport for Uart {
    /// #     fn open(&mut self) -> Result<(), TransportError> { Ok(()) }
    /// #     fn close(&mut self) {}
    /// #     fn read(&mut self, _: &mut [u8]) -> Result<usize, TransportError> { Ok(0) }
    /// #     fn write(&mut self, _: &[u8]) -> Result<(), TransportError> { Ok(()) }
    /// # }
    /// # let mut device: Device<_, _, 8, 512> =
    /// #     Device::new("env-7", BootId::new(1), Uart, NoClock, Settings::default()).unwrap();
    /// let mut interval_ms = 1000;
    /// let _ = device.poll_commands(0, |command| match command.name {
    ///     "ping" => Outcome::done("pong"),
    ///     "set_interval" => match command.payload_u64(Some("ms")) {
    ///         Some(ms) => {
    ///             interval_ms = ms;
    ///             Outcome::done("")
    ///         }
    ///         None => Outcome::failed("payload must be {\"ms\": N}"),
    ///     },
    ///     _ => Outcome::failed("unknown command"),
    /// });
    /// ```
    pub fn poll_commands(
        &mut self,
        now_ms: u64,
        mut handler: impl FnMut(&Command<'_>) -> Outcome,
    ) -> Result<Activity, Error> {
        self.poll_inner(now_ms, &mut |_, command| command.map(&mut handler))
    }

    fn poll_inner(&mut self, now_ms: u64, on_command: &mut OnCommand<'_>) -> Result<Activity, Error> {
        let mut activity = Activity::default();
        let result = self.step(now_ms, &mut activity, on_command);
        self.stats.oversized = self.client.skipped();
        if let Err(err) = &result {
            if err.is_link() {
                self.stats.link_errors += 1;
                self.go_offline(now_ms);
            }
        }
        result.map(|()| activity)
    }

    fn step(&mut self, now: u64, activity: &mut Activity, on_command: &mut OnCommand<'_>) -> Result<(), Error> {
        if let Link::Offline { retry_at } = self.link {
            if now < retry_at {
                return Ok(());
            }
            self.link = Link::Connecting { since: now };
            let device = self.numbering.device();
            let password = self.settings.password.map(|p| p.as_bytes());
            let connect = Connect {
                client_id: device,
                keep_alive_secs: self.settings.keep_alive_secs,
                clean_session: true,
                username: self.settings.username.or(password.map(|_| device)),
                password,
            };
            self.client.connect(&connect, now)?;
        }
        self.receive(now, activity, on_command)?;
        match self.link {
            Link::Connecting { since } | Link::Subscribing { since }
                if now.saturating_sub(since) >= u64::from(self.settings.response_timeout_ms) =>
            {
                return Err(Error::Timeout);
            }
            Link::Online { since } => {
                if now.saturating_sub(since) >= u64::from(self.settings.stable_after_ms) {
                    self.retry_ms = self.settings.retry_min_ms;
                }
                self.send(now, activity)?;
            }
            _ => {}
        }
        self.client.flush()
    }

    fn receive(&mut self, now: u64, activity: &mut Activity, on_command: &mut OnCommand<'_>) -> Result<(), Error> {
        // Bounded, so that a broker flooding the device cannot starve sending; the rest
        // waits in the transport for the next poll.
        while activity.received < MAX_PACKETS_PER_POLL {
            let mut answer = None;
            let mut ready = false;
            let subscribe = match self.client.poll(now)? {
                None => return Ok(()),
                Some(Packet::ConnAck { .. }) => true,
                Some(Packet::SubAck { codes, .. }) => {
                    if let Some(&code) = codes.iter().find(|&&c| c == 0x80) {
                        return Err(Error::Refused { code });
                    }
                    if let Link::Subscribing { .. } = self.link {
                        self.link = Link::Online { since: now };
                        self.ring.rewind();
                        ready = true;
                    }
                    false
                }
                Some(Packet::Publish(p)) if p.topic == self.ack_topic.as_str() => {
                    match Ack::decode_json(p.payload) {
                        Ok(ack) => self.stats.confirmed += self.ring.confirm(ack) as u64,
                        Err(_) => self.stats.bad_acks += 1,
                    }
                    false
                }
                Some(Packet::Publish(p)) if p.topic == self.commands_topic.as_str() => {
                    self.stats.commands += 1;
                    match Command::decode(p.payload) {
                        Ok(command) => {
                            if let Some(slot) = self.recent.find(command.id) {
                                self.stats.commands_repeated += 1;
                                answer = Some(slot);
                            } else {
                                let late = self.clock.now_ms().is_some_and(|now| command.is_expired(now));
                                let outcome = if late {
                                    Some(Outcome::failed("deadline passed before the device got the command"))
                                } else {
                                    on_command(p.payload, Some(&command))
                                };
                                if let Some(outcome) = outcome {
                                    self.stats.commands_run += u64::from(!late);
                                    answer = self.recent.insert(command.id, outcome);
                                }
                            }
                        }
                        Err(_) => {
                            self.stats.bad_commands += 1;
                            on_command(p.payload, None);
                        }
                    }
                    false
                }
                Some(_) => false,
            };
            activity.received += 1;
            if ready {
                self.reply(&Reply { id: "", status: ReplyStatus::Ready, message: "" }, now)?;
            }
            if let Some(answer) = answer.and_then(|slot| self.recent.get(slot)).cloned() {
                let id = answer.id.as_str();
                self.reply(&Reply { id, status: ReplyStatus::Delivered, message: "" }, now)?;
                let outcome = &answer.outcome;
                self.reply(&Reply { id, status: outcome.status(), message: outcome.message() }, now)?;
            }
            if subscribe {
                self.stats.connects += 1;
                self.link = Link::Subscribing { since: now };
                let filters =
                    [(self.ack_topic.as_str(), QoS::AtLeastOnce), (self.commands_topic.as_str(), QoS::AtLeastOnce)];
                self.client.subscribe(&filters, now)?;
            }
        }
        Ok(())
    }

    /// Publishes a reply on the status topic (QoS 1; the gateway re-sends the command if it
    /// is lost, and the answer comes from memory then).
    fn reply(&mut self, reply: &Reply<'_>, now: u64) -> Result<(), Error> {
        let mut buf = [0u8; MAX_REPLY_LEN];
        let len = reply.encode(&mut buf)?;
        let payload = buf.get(..len).unwrap_or_default();
        self.client.publish(&self.status_topic, payload, QoS::AtLeastOnce, false, now)?;
        Ok(())
    }

    /// Publishes unconfirmed events, oldest first, while the send window allows.
    fn send(&mut self, now: u64, activity: &mut Activity) -> Result<(), Error> {
        let window = self.settings.max_inflight.max(1);
        let qos = self.settings.qos;
        let mut dated = [0u8; MAX_ENCODED_LEN];
        loop {
            let full = match qos {
                QoS::AtLeastOnce => self.client.inflight() >= window,
                QoS::AtMostOnce => activity.published >= window,
            };
            if full {
                break;
            }
            let Some(next) = self.ring.next_unsent()? else { break };
            // An event stored with its uptime goes out with its age now (numbering.rs).
            let payload =
                crate::numbering::payload_to_send(next.id, next.payload, self.numbering.boot(), now, &mut dated);
            let packet_len = MAX_FIXED_HEADER_LEN + 4 + self.events_topic.len() + payload.len();
            if self.client.transport().writable() < packet_len.saturating_add(TX_HEADROOM) {
                break;
            }
            self.client.publish(&self.events_topic, payload, qos, false, now)?;
            if next.sent_before {
                self.stats.resent += 1;
            }
            self.ring.mark_sent();
            self.stats.published += 1;
            activity.published += 1;
        }
        Ok(())
    }

    fn go_offline(&mut self, now: u64) {
        self.client.abort();
        self.ring.rewind();
        // xorshift32: half the delay fixed, half random, so a fleet spreads out.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 17;
        self.jitter ^= self.jitter << 5;
        let delay = self.retry_ms / 2 + self.jitter % (self.retry_ms / 2 + 1);
        self.link = Link::Offline { retry_at: now + u64::from(delay) };
        self.retry_ms = self.retry_ms.saturating_mul(2).min(self.settings.retry_max_ms.max(self.settings.retry_min_ms));
    }

    /// Closes the link politely (DISCONNECT); the device reconnects after `retry_min_ms`.
    pub fn disconnect(&mut self, now_ms: u64) {
        self.client.disconnect(now_ms);
        self.ring.rewind();
        self.link = Link::Offline { retry_at: now_ms + u64::from(self.settings.retry_min_ms) };
    }

    /// Starts boot `boot` without losing the ring: disconnects, and numbers new events
    /// from seq 1. For simulators, and for firmware whose ring survives a reset (kept in
    /// a RAM section the startup code does not zero); a real power loss empties a RAM ring
    /// (a `FlashRing` keeps it: reopen it and build the device with `with_retention`).
    pub fn reboot(&mut self, boot: BootId, now_ms: u64) {
        self.disconnect(now_ms);
        self.numbering.reboot(boot);
    }

    /// When the device must be polled next if nothing arrives from the broker (a monotonic
    /// ms time, as `now_ms`; `now_ms` itself when work is waiting): the reconnect time, a
    /// CONNACK/SUBACK timeout, a keep-alive ping, the backoff reset, events to send. A
    /// battery device sleeps until then, or until its radio has bytes or it records an
    /// event.
    pub fn next_deadline(&self, now_ms: u64) -> u64 {
        let timeout = u64::from(self.settings.response_timeout_ms);
        let own = match self.link {
            Link::Offline { retry_at } => retry_at,
            Link::Connecting { since } | Link::Subscribing { since } => since + timeout,
            Link::Online { .. } if self.has_sendable() => now_ms,
            Link::Online { since } if self.retry_ms != self.settings.retry_min_ms => {
                since + u64::from(self.settings.stable_after_ms)
            }
            Link::Online { .. } => u64::MAX,
        };
        own.min(self.client.next_deadline().unwrap_or(u64::MAX)).max(now_ms)
    }

    /// True when the ring holds an event not sent on this link and the window is open.
    fn has_sendable(&self) -> bool {
        let unsent = self.ring.unsent() > 0;
        let open = match self.settings.qos {
            QoS::AtLeastOnce => self.client.inflight() < self.settings.max_inflight.max(1),
            QoS::AtMostOnce => true,
        };
        unsent && open
    }

    /// True between the SUBACK and the loss of the link.
    pub fn is_online(&self) -> bool {
        matches!(self.link, Link::Online { .. })
    }

    /// Events not yet confirmed by the gateway.
    pub fn pending(&self) -> usize {
        self.ring.len()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Where the unconfirmed events are, for inspection.
    pub fn ring(&self) -> &R {
        &self.ring
    }

    /// The numbering: device id, current boot, next seq.
    pub fn numbering(&self) -> &Numbering {
        &self.numbering
    }

    /// The transport, for inspection.
    pub fn transport(&self) -> &T {
        self.client.transport()
    }

    /// The transport, for tweaking it between sessions.
    pub fn transport_mut(&mut self) -> &mut T {
        self.client.transport_mut()
    }
}
