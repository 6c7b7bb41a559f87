//! `format = "postcard"`: the compact batch of `edge_event::batch` (a header, then the
//! stored envelopes as they are, each with its length), decoded with
//! `edge_event::batch::decode_batch`. Its body has no room for a replay mark, so replayed
//! batches go one topic level deeper.

use edge_event::batch;

use super::{BatchWriter, Entry, Header};

/// Writes a postcard batch.
#[derive(Debug, Default)]
pub struct Postcard {
    /// Events in the batch so far.
    events: usize,
}

impl BatchWriter for Postcard {
    const NAME: &'static str = "postcard";
    const BARE_TOPIC: bool = false;
    const REPLAY_IN_BODY: bool = false;

    fn begin(&mut self, out: &mut Vec<u8>, header: &Header<'_>) {
        self.events = 0;
        batch::begin_batch(out, header.gateway, header.route, header.batch);
    }

    #[inline]
    fn push(&mut self, out: &mut Vec<u8>, entry: Entry<'_>, max_bytes: usize) -> bool {
        if self.events > 0 && out.len() + batch::entry_len(entry.envelope.len()) > max_bytes {
            return false;
        }
        // The stored row is the envelope the batch carries: no re-encoding.
        batch::push_envelope(out, entry.envelope);
        self.events += 1;
        true
    }

    fn finish(&mut self, _out: &mut Vec<u8>) {}
}
