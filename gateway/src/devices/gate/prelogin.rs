//! The pre-login limits of the device gate: connections between accept and an
//! authenticated CONNECT (SECURITY.md, "Pre-login limits"; docs/operations.md, "Device
//! security").
//!
//! Such a connection costs the gateway a socket and a task and has proven nothing. Idle
//! sockets that never send a CONNECT, reopened as soon as they are closed, used to fill the
//! 256 pre-login places so that real devices were refused. A device sends its first bytes
//! (CONNECT, or a TLS ClientHello) right after the TCP handshake, so the gate gives each new
//! connection a short probation ([`PROBATION`]) to show them before it takes a place, and
//! admits it as *sending* or *silent*. The rules:
//!
//! 1. At most [`Limits::per_source`] silent connections of one source address (an IPv4
//!    address, an IPv6 /64) at once; one more evicts that source's oldest silent one. One
//!    address can no longer fill the table.
//! 2. Under pressure (more than half the places taken) a new connection gets
//!    [`Limits::pressed_deadline`] instead of [`Limits::deadline`], and waiting connections
//!    older than that, silent or sending, are evicted at the next admission.
//! 3. At most [`Limits::total`] connections are before login at once; one more evicts the
//!    oldest silent connection. Only when none is silent (every place is taken by a
//!    connection that sent bytes, or whose CONNECT is being checked) is the newest refused,
//!    as before.
//!
//! Sending connections are never evicted for room (rule 2 aside): a burst of devices from
//! one address (a fleet behind NAT reconnecting: measured, 50 rumqttc clients whose CONNECTs
//! took up to 45 ms to be complete) must not lose its oldest members. A silent connection
//! is the oldest waiting one long before a device is. Eviction closes the socket; the gate
//! counts it (`device_connections_refused_total{reason="evicted"}`) and logs it,
//! rate-limited. A client that sends a byte and then nothing is held to the 256 places and
//! the deadline only (SECURITY.md, "Pre-login limits").
//!
//! Invariant: every admitted connection is counted exactly once, in `waiting` (evictable)
//! or in `checking`, until its [`Admitted`] is dropped or it is evicted.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a new connection has to show its first bytes before it takes a place (as
/// sending) or takes one as silent. Clients send right after the TCP handshake; the wait
/// ends as soon as the bytes are there.
pub const PROBATION: Duration = Duration::from_millis(250);

/// Most connections in [`PROBATION`] at once; beyond, a connection takes its place (as
/// silent) at once, so the probation cannot hold more sockets than this.
pub const MAX_PROBATION: usize = 1024;

/// The bounds (the gate's: [`Limits::gate`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections before login, all sources together.
    pub total: usize,
    /// Most connections of one source address waiting for their CONNECT.
    pub per_source: usize,
    /// Time from accept to a complete CONNECT (TLS handshake included).
    pub deadline: Duration,
    /// The same while more than half of `total` is taken.
    pub pressed_deadline: Duration,
}

impl Limits {
    /// The device gate's limits, with `deadline` for the CONNECT (`connection_timeout`).
    pub fn gate(deadline: Duration) -> Limits {
        Limits { total: 256, per_source: 32, deadline, pressed_deadline: deadline.min(Duration::from_secs(3)) }
    }
}

/// Why a waiting connection was closed before its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Its source address had [`Limits::per_source`] connections waiting, and a newer one came.
    Source,
    /// Every place was taken, and a newer connection came.
    Full,
    /// It waited longer than [`Limits::pressed_deadline`] while the table was under pressure.
    Pressure,
}

impl Eviction {
    /// For the log line.
    pub fn detail(self) -> &'static str {
        match self {
            Eviction::Source => "evicted: the oldest of too many connections from its address waiting for a CONNECT",
            Eviction::Full => "evicted: the oldest of too many connections waiting for a CONNECT",
            Eviction::Pressure => "evicted: no CONNECT within the shortened deadline while many connections wait",
        }
    }
}

/// Why a step before login did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The deadline passed; `pressed` when it was the shortened one.
    Deadline {
        /// It was [`Limits::pressed_deadline`].
        pressed: bool,
    },
    /// A newer connection needed the place.
    Evicted(Eviction),
}

/// Every place is taken by a connection whose CONNECT is being checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// The pre-login table, shared by every connection of one listener.
pub struct Prelogin {
    limits: Limits,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// Connections waiting for their CONNECT, by admission order (= age).
    waiting: BTreeMap<u64, Waiting>,
    /// How many of `waiting` each source has.
    per_source: HashMap<Source, usize>,
    /// Connections whose CONNECT has arrived and is being checked.
    checking: usize,
}

struct Waiting {
    source: Source,
    since: Instant,
    /// It sent bytes within its probation (evicted after every silent one).
    sending: bool,
    evict: oneshot::Sender<Eviction>,
}

/// A source address as the bound counts it: an IPv4 address, or an IPv6 /64 (one host
/// usually has a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.into()),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl Table {
    /// Removes a waiting connection and tells it why.
    fn evict(&mut self, id: u64, why: Eviction) {
        if let Some(waiting) = self.remove(id) {
            let _ = waiting.evict.send(why);
        }
    }

    fn remove(&mut self, id: u64) -> Option<Waiting> {
        let waiting = self.waiting.remove(&id)?;
        if waiting.sending {
            return Some(waiting);
        }
        if let Some(count) = self.per_source.get_mut(&waiting.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&waiting.source);
            }
        }
        Some(waiting)
    }

    fn total(&self) -> usize {
        self.waiting.len() + self.checking
    }

    /// The oldest silent connection that `matches`.
    fn oldest_silent(&self, matches: impl Fn(&Waiting) -> bool) -> Option<u64> {
        self.waiting.iter().find(|(_, w)| !w.sending && matches(w)).map(|(id, _)| *id)
    }
}

impl Prelogin {
    /// An empty table with these limits.
    pub fn new(limits: Limits) -> Arc<Prelogin> {
        Arc::new(Prelogin { limits, table: Mutex::new(Table::default()) })
    }

    /// Admits a connection from `ip` that has (`sending`) or has not sent bytes, evicting
    /// older waiting connections as the rules in the module's docs say.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, sending: bool) -> Result<Admitted, Full> {
        self.admit_at(ip, sending, Instant::now)
    }

    /// [`Prelogin::admit`] with the clock as a parameter (tests).
    fn admit_at(
        self: &Arc<Self>,
        ip: IpAddr,
        sending: bool,
        clock: impl FnOnce() -> Instant,
    ) -> Result<Admitted, Full> {
        let limits = self.limits;
        let source = Source::of(ip);
        let mut table = self.table.lock().map_err(|_| Full)?;
        // Read under the lock: admission order is age order.
        let now = clock();
        if !sending && table.per_source.get(&source).copied().unwrap_or(0) >= limits.per_source {
            if let Some(id) = table.oldest_silent(|w| w.source == source) {
                table.evict(id, Eviction::Source);
            }
        }
        let pressed = table.total() + 1 > limits.total / 2;
        if pressed {
            while let Some((&id, waiting)) = table.waiting.iter().next() {
                if now.duration_since(waiting.since) < limits.pressed_deadline {
                    break;
                }
                table.evict(id, Eviction::Pressure);
            }
        }
        if table.total() >= limits.total {
            let Some(oldest) = table.oldest_silent(|_| true) else { return Err(Full) };
            table.evict(oldest, Eviction::Full);
        }
        let id = table.next;
        table.next += 1;
        let (evict, evicted) = oneshot::channel();
        table.waiting.insert(id, Waiting { source, since: now, sending, evict });
        if !sending {
            *table.per_source.entry(source).or_insert(0) += 1;
        }
        let deadline = now + if pressed { limits.pressed_deadline } else { limits.deadline };
        Ok(Admitted { prelogin: self.clone(), id, state: State::Waiting, evicted, deadline, pressed, gone: None })
    }

    /// Connections before login now: (waiting for a CONNECT, being checked).
    pub fn counts(&self) -> (usize, usize) {
        self.table.lock().map(|t| (t.waiting.len(), t.checking)).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Checking,
}

/// One connection's place in the table until it has logged in (dropped) or was evicted.
pub struct Admitted {
    prelogin: Arc<Prelogin>,
    id: u64,
    state: State,
    evicted: oneshot::Receiver<Eviction>,
    deadline: Instant,
    pressed: bool,
    /// Why it was evicted, once it knows (the receiver is read at most once).
    gone: Option<Eviction>,
}

impl Admitted {
    /// Runs a step before the CONNECT (TLS handshake, reading the CONNECT) until it ends,
    /// the connection's deadline passes, or a newer connection evicts it.
    pub async fn within<T>(&mut self, step: impl Future<Output = T>) -> Result<T, Cut> {
        let pressed = self.pressed;
        let timed = tokio::time::timeout_at(self.deadline, step);
        if self.state == State::Checking {
            return timed.await.map_err(|_| Cut::Deadline { pressed });
        }
        if let Some(why) = self.gone {
            return Err(Cut::Evicted(why));
        }
        tokio::select! {
            biased;
            why = &mut self.evicted => {
                let why = why.unwrap_or(Eviction::Full);
                self.gone = Some(why);
                Err(Cut::Evicted(why))
            }
            done = timed => done.map_err(|_| Cut::Deadline { pressed }),
        }
    }

    /// The CONNECT has arrived: from now on the connection is not evictable (it is being
    /// checked, which has its own bound). Err if it was evicted meanwhile.
    pub fn connect_received(&mut self) -> Result<(), Cut> {
        if self.state == State::Checking {
            return Ok(());
        }
        let mut table = self.prelogin.table.lock().map_err(|_| Cut::Evicted(Eviction::Full))?;
        if table.remove(self.id).is_none() {
            let why = self.gone.or_else(|| self.evicted.try_recv().ok()).unwrap_or(Eviction::Full);
            self.gone = Some(why);
            return Err(Cut::Evicted(why));
        }
        table.checking += 1;
        self.state = State::Checking;
        Ok(())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut table) = self.prelogin.table.lock() {
            match self.state {
                State::Waiting => drop(table.remove(self.id)),
                State::Checking => table.checking -= 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    /// 8 places, 3 per source; short real deadlines (the tests that wait for one).
    fn small() -> Arc<Prelogin> {
        let limits = Limits {
            total: 8,
            per_source: 3,
            deadline: Duration::from_millis(400),
            pressed_deadline: Duration::from_millis(100),
        };
        Prelogin::new(limits)
    }

    async fn cut(admitted: &mut Admitted) -> Option<Cut> {
        admitted.within(std::future::pending::<()>()).await.err()
    }

    #[tokio::test]
    async fn one_source_beyond_its_bound_evicts_its_own_oldest_not_others() {
        let table = small();
        let mut other = table.admit(ip(9), false).unwrap();
        let mut first = table.admit(ip(2), false).unwrap();
        let _second = table.admit(ip(2), false).unwrap();
        let _third = table.admit(ip(2), false).unwrap();
        let _fourth = table.admit(ip(2), false).unwrap();
        assert_eq!(cut(&mut first).await, Some(Cut::Evicted(Eviction::Source)));
        assert_eq!(table.counts(), (4, 0), "the other source's connection and three of ip 2");
        other.connect_received().unwrap();
        assert_eq!(table.counts(), (3, 1));
        assert_eq!(first.connect_received(), Err(Cut::Evicted(Eviction::Source)), "a CONNECT too late");
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_oldest_waiting_and_admits_the_newest() {
        let table = small();
        let mut checking = table.admit(ip(1), false).unwrap();
        checking.connect_received().unwrap();
        let mut waiting: Vec<Admitted> = (0..7).map(|i| table.admit(ip(10 + i), false).unwrap()).collect();
        let _newest = table.admit(ip(30), false).expect("admitted: the oldest waiting one makes room");
        assert_eq!(cut(&mut waiting[0]).await, Some(Cut::Evicted(Eviction::Full)));
        assert!(checking.connect_received().is_ok(), "a connection being checked is never evicted");
        assert_eq!(table.counts(), (7, 1));
    }

    #[tokio::test]
    async fn only_connections_being_checked_make_a_refusal() {
        let table = small();
        let held: Vec<Admitted> = (0..8)
            .map(|i| {
                let mut admitted = table.admit(ip(10 + i), false).unwrap();
                admitted.connect_received().unwrap();
                admitted
            })
            .collect();
        assert!(matches!(table.admit(ip(40), false), Err(Full)));
        drop(held);
        assert_eq!(table.counts(), (0, 0), "every place is given back");
    }

    #[tokio::test]
    async fn under_pressure_the_deadline_is_shorter_and_old_waiters_go() {
        let table = small();
        let mut calm = table.admit(ip(1), false).unwrap();
        let _a = table.admit(ip(2), false).unwrap();
        let _b = table.admit(ip(3), false).unwrap();
        let _c = table.admit(ip(4), false).unwrap();
        // The fifth of 8 places, 1 s later: pressure; the first four waited longer than
        // the pressed deadline and are evicted.
        let later = Instant::now() + Duration::from_secs(1);
        let mut pressed = table.admit_at(ip(5), false, || later).unwrap();
        assert_eq!(cut(&mut calm).await, Some(Cut::Evicted(Eviction::Pressure)));
        assert_eq!(table.counts(), (1, 0));
        drop(pressed);
        // Real time: under pressure a newcomer gets the short deadline.
        let _fill: Vec<Admitted> = (0..4).map(|i| table.admit(ip(20 + i), false).unwrap()).collect();
        pressed = table.admit(ip(30), false).unwrap();
        let started = Instant::now();
        assert_eq!(cut(&mut pressed).await, Some(Cut::Deadline { pressed: true }));
        assert!(started.elapsed() < Duration::from_millis(400), "the pressed deadline, not the calm one");
    }

    #[tokio::test]
    async fn a_step_that_ends_in_time_passes_and_a_calm_deadline_is_the_long_one() {
        let table = small();
        let started = Instant::now();
        let mut admitted = table.admit(ip(1), false).unwrap();
        assert_eq!(admitted.within(async { 7 }).await, Ok(7));
        assert_eq!(cut(&mut admitted).await, Some(Cut::Deadline { pressed: false }));
        assert!(started.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn only_silent_connections_are_evicted_for_room() {
        let table = small();
        // One address: sending connections do not count toward its bound of silent ones.
        let mut sending = table.admit(ip(2), true).unwrap();
        let _burst: Vec<Admitted> = (0..4).map(|_| table.admit(ip(2), true).unwrap()).collect();
        let mut silent = table.admit(ip(2), false).unwrap();
        let _silent2 = table.admit(ip(2), false).unwrap();
        let _silent3 = table.admit(ip(2), false).unwrap();
        assert_eq!(table.counts(), (8, 0), "a burst of sending ones and 3 silent ones");
        drop(_burst);
        let _silent4 = table.admit(ip(2), false).unwrap();
        assert_eq!(cut(&mut silent).await, Some(Cut::Evicted(Eviction::Source)), "the oldest silent one");
        assert!(sending.connect_received().is_ok(), "the older sending one stays");
        // Full table: a silent one goes; with none silent, the newest is refused.
        let table = small();
        let mut old_sending = table.admit(ip(1), true).unwrap();
        let _rest: Vec<Admitted> = (0..6).map(|i| table.admit(ip(10 + i), true).unwrap()).collect();
        let mut young_silent = table.admit(ip(20), false).unwrap();
        let _ninth = table.admit(ip(21), true).unwrap();
        assert_eq!(cut(&mut young_silent).await, Some(Cut::Evicted(Eviction::Full)));
        assert!(matches!(table.admit(ip(22), true), Err(Full)), "no silent one to make room");
        assert!(old_sending.connect_received().is_ok(), "sending ones are never evicted for room");
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of(ip(2)));
    }
}
