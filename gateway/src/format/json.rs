//! `format = "json"` (the default): `{"gateway":..,"route":..,"batch":N,"events":[...]}`,
//! each event as `edge_event::json` writes it; a replayed batch says `"replay":true` after
//! `"batch"`. Published on the route's topic as is when uncompressed.

use super::{BatchWriter, Entry, Header};

/// Writes a JSON batch.
#[derive(Debug)]
pub struct Json {
    /// The event being added, written here first to learn its size.
    scratch: Vec<u8>,
    /// Events in the batch so far.
    events: usize,
}

impl Default for Json {
    fn default() -> Self {
        // One allocation per batch, big enough for a typical event.
        Json { scratch: Vec::with_capacity(512), events: 0 }
    }
}

/// `]}`, written by `finish`: room every `push` keeps.
const CLOSE: &[u8] = b"]}";

impl BatchWriter for Json {
    const NAME: &'static str = "json";
    const BARE_TOPIC: bool = true;
    const REPLAY_IN_BODY: bool = true;

    fn begin(&mut self, out: &mut Vec<u8>, header: &Header<'_>) {
        self.events = 0;
        out.extend_from_slice(
            format!(
                r#"{{"gateway":"{}","route":"{}","batch":{}{},"events":["#,
                header.gateway,
                header.route,
                header.batch,
                if header.replay { r#","replay":true"# } else { "" }
            )
            .as_bytes(),
        );
    }

    #[inline]
    fn push(&mut self, out: &mut Vec<u8>, entry: Entry<'_>, max_bytes: usize) -> bool {
        self.scratch.clear();
        edge_event::json::write(entry.event, &mut self.scratch);
        if self.events > 0 && out.len() + 1 + self.scratch.len() + CLOSE.len() > max_bytes {
            return false;
        }
        if self.events > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&self.scratch);
        self.events += 1;
        true
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(CLOSE);
    }
}
