//! MQTT client plumbing shared by every stage that is a client of a broker: the forwarder
//! and the downlink's command session (the cloud), the downlink's device side and the
//! external device source (a local broker).
//!
//! - [`spawn_poller`]: runs a rumqttc event loop in a task of its own, so that its `poll`
//!   is never cancelled by a `select!` elsewhere (cancelling it mid-packet loses the
//!   packet), and hands its events over a bounded channel.
//! - [`Backoff`]: reconnect delays, exponential with full jitter.
//!
//! Two ways to meet an error ([`OnError`]): the forwarder and the command session stop the
//! poller and reconnect with a fresh client (their own backoff decides when); the local
//! clients keep one client for their whole life, and the poller waits a backoff delay
//! before the next `poll` (rumqttc reconnects on the very next one).

mod backoff;

pub use backoff::Backoff;

use rumqttc::{ConnectionError, Event, EventLoop, Packet};
use tokio::sync::mpsc;

/// What the poller does after a failed `poll`.
#[derive(Debug)]
pub enum OnError {
    /// Hand the error over and end: the caller reconnects with a fresh client.
    Stop,
    /// Hand the error over, wait the next delay, and poll again (rumqttc reconnects); a
    /// CONNACK resets the delays.
    Retry(Backoff),
}

/// A running event loop: its events, and the task (aborted when this is dropped).
#[derive(Debug)]
pub struct Poller {
    /// What the event loop saw, in order; closed when the task ends.
    pub events: mpsc::Receiver<Result<Event, ConnectionError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `eventloop` in its own task until the [`Poller`] is dropped (or, with
/// [`OnError::Stop`], until the first error).
pub fn spawn_poller(mut eventloop: EventLoop, capacity: usize, mut on_error: OnError) -> Poller {
    let (events_tx, events) = mpsc::channel(capacity);
    let task = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if let (OnError::Retry(backoff), Ok(Event::Incoming(Packet::ConnAck(_)))) = (&mut on_error, &event) {
                backoff.reset();
            }
            if events_tx.send(event).await.is_err() {
                return;
            }
            if failed {
                match &mut on_error {
                    OnError::Stop => return,
                    OnError::Retry(backoff) => tokio::time::sleep(backoff.next_delay()).await,
                }
            }
        }
    });
    Poller { events, task }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rumqttc::{AsyncClient, MqttOptions};

    use super::*;

    /// A port nothing listens on (bound, then closed).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn stop_hands_over_the_first_error_and_ends() {
        let (_client, eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", closed_port()), 8);
        let mut poller = spawn_poller(eventloop, 8, OnError::Stop);
        let first = tokio::time::timeout(Duration::from_secs(5), poller.events.recv()).await.unwrap();
        assert!(matches!(first, Some(Err(_))), "{first:?}");
        let next = tokio::time::timeout(Duration::from_secs(5), poller.events.recv()).await.unwrap();
        assert!(next.is_none(), "the task ended after the error: {next:?}");
    }

    #[tokio::test]
    async fn retry_keeps_polling_with_growing_delays() {
        let (_client, eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", closed_port()), 8);
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(80));
        let mut poller = spawn_poller(eventloop, 8, OnError::Retry(backoff));
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            let event = tokio::time::timeout(Duration::from_secs(5), poller.events.recv()).await.unwrap();
            assert!(matches!(event, Some(Err(_))), "{event:?}");
        }
        // Three waits of at least the minimum delay between four errors.
        assert!(start.elapsed() >= Duration::from_millis(60), "{:?}", start.elapsed());
    }
}
