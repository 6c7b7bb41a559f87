//! Batch formats: how a route's batch body is written (`routes[].format`),
//! one file per format, and the registry that names them.
//!
//! A format is a [`BatchWriter`]: `begin` writes the batch header, `push` appends one
//! event if it fits, `finish` closes the body (like postcard's `Flavor`, the writer owns
//! only what the format needs; the output buffer is the caller's). The forwarder cuts
//! batches (`forward/batch.rs`); a writer only encodes.
//!
//! Invariants:
//! - The first event of a batch always goes in; after it, `push` appends an event only if
//!   the *finished* batch stays within `max_bytes`, and otherwise leaves `out` untouched.
//! - Dispatch is per batch, never per event: [`BatchFormat::with_writer`] hands the
//!   format's concrete writer to generic code, which is compiled once per format.
//! - The wire bytes of every format are pinned by tests here and in `edge_event::batch`.
//!
//! Adding a format: a new file with a type implementing [`BatchWriter`], and one line in
//! the `registry!` call below. Config validation, topic naming and the forwarder pick it
//! up from there. This module is a leaf: it imports no stage, so config can use it.

pub mod encoding;

use edge_event::Event;
pub use encoding::{Compression, Encoding};

/// What a batch says about itself besides its events.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// `"gateway"`: the gateway id.
    pub gateway: &'a str,
    /// `"route"`: the route name.
    pub route: &'a str,
    /// `"batch"`: the route's batch number.
    pub batch: u64,
    /// The events are replayed copies (`edge-gateway replay`).
    pub replay: bool,
}

/// One event for a batch: decoded, and as the journal stores it (its envelope).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The decoded event.
    pub event: &'a Event,
    /// The stored envelope bytes (`edge_event::encode`'s output).
    pub envelope: &'a [u8],
}

/// Writes one batch body. A fresh writer (`Default`) is made for every batch.
pub trait BatchWriter: Default {
    /// The name in config (`routes[].format`) and the first part of the topic level that
    /// names the encoding (`postcard`, `postcard.zstd`).
    const NAME: &'static str;
    /// Uncompressed batches go on the route's topic as is, without a level naming the
    /// encoding (only the default format does this).
    const BARE_TOPIC: bool;
    /// A replayed batch says so in its body; a format without room for that mark sends
    /// replayed batches one topic level deeper (`{to}/replay/...`).
    const REPLAY_IN_BODY: bool;

    /// Starts the batch in `out` (empty): its header.
    fn begin(&mut self, out: &mut Vec<u8>, header: &Header<'_>);

    /// Appends `entry` if the finished batch stays within `max_bytes` (the first entry
    /// always goes in); false, with `out` unchanged, when it does not fit.
    fn push(&mut self, out: &mut Vec<u8>, entry: Entry<'_>, max_bytes: usize) -> bool;

    /// Closes the batch.
    fn finish(&mut self, out: &mut Vec<u8>);
}

/// Work done with a format's concrete writer ([`BatchFormat::with_writer`]): generic, so
/// every call into the writer is static.
pub trait WithWriter {
    /// What the work gives.
    type Output;
    /// Does the work with `writer`.
    fn run<W: BatchWriter>(self, writer: W) -> Self::Output;
}

/// The registry: one line per format, `Variant => file::WriterType` (the file is declared
/// as a module here). The first is the default.
macro_rules! registry {
    ($($variant:ident => $module:ident :: $writer:ident),+ $(,)?) => {
        $(mod $module;)+


        /// A batch format, as a route chooses it (`format = "..."`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum BatchFormat {
            $(
                #[doc = concat!("Written by `", stringify!($module), "::", stringify!($writer), "`.")]
                $variant,
            )+
        }

        impl BatchFormat {
            /// Every format, the default first.
            pub const ALL: &'static [BatchFormat] = &[$(BatchFormat::$variant),+];

            /// Its name in config.
            pub fn name(self) -> &'static str {
                match self { $(BatchFormat::$variant => <$module::$writer as BatchWriter>::NAME),+ }
            }

            /// Uncompressed batches go on the route's topic as is.
            pub fn bare_topic(self) -> bool {
                match self { $(BatchFormat::$variant => <$module::$writer as BatchWriter>::BARE_TOPIC),+ }
            }

            /// A replayed batch is marked in its body (else by its topic).
            pub fn replay_in_body(self) -> bool {
                match self { $(BatchFormat::$variant => <$module::$writer as BatchWriter>::REPLAY_IN_BODY),+ }
            }

            /// Runs `work` with a fresh writer of this format.
            pub fn with_writer<T: WithWriter>(self, work: T) -> T::Output {
                match self { $(BatchFormat::$variant => work.run($module::$writer::default())),+ }
            }
        }
    };
}

registry! {
    Json => json::Json,
    Postcard => postcard::Postcard,
}

impl Default for BatchFormat {
    fn default() -> Self {
        BatchFormat::ALL[0]
    }
}

impl BatchFormat {
    /// The format called `name` in config.
    pub fn from_name(name: &str) -> Option<BatchFormat> {
        BatchFormat::ALL.iter().copied().find(|format| format.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write<W: BatchWriter>(header: &Header<'_>, envelopes: &[Vec<u8>], max_bytes: usize) -> (Vec<u8>, usize) {
        let mut writer = W::default();
        let mut out = Vec::new();
        writer.begin(&mut out, header);
        let mut taken = 0;
        for envelope in envelopes {
            let event = edge_event::decode(envelope).unwrap();
            if !writer.push(&mut out, Entry { event: &event, envelope }, max_bytes) {
                break;
            }
            taken += 1;
        }
        writer.finish(&mut out);
        (out, taken)
    }

    fn envelope(seq: u32) -> Vec<u8> {
        let json = format!(r#"{{"device":"d1","boot":1,"seq":{seq},"ts":5,"type":"t","readings":{{"c":1.5}}}}"#);
        let event = edge_event::json::from_slice(json.as_bytes()).unwrap();
        let mut buf = [0u8; edge_event::MAX_ENCODED_LEN];
        let len = edge_event::encode(&event, &mut buf).unwrap();
        buf[..len].to_vec()
    }

    #[test]
    fn the_registry_names_each_format_once_and_json_is_the_default() {
        let names: Vec<&str> = BatchFormat::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["json", "postcard"]);
        assert_eq!(BatchFormat::default(), BatchFormat::Json);
        assert_eq!(BatchFormat::from_name("postcard"), Some(BatchFormat::Postcard));
        assert_eq!(BatchFormat::from_name("cbor"), None);
        assert!(BatchFormat::Json.bare_topic() && BatchFormat::Json.replay_in_body());
        assert!(!BatchFormat::Postcard.bare_topic() && !BatchFormat::Postcard.replay_in_body());
    }

    #[test]
    fn the_json_batch_bytes_are_pinned() {
        let header = Header { gateway: "g", route: "r", batch: 3, replay: true };
        let (out, taken) = write::<json::Json>(&header, &[envelope(1), envelope(2)], 4096);
        assert_eq!(taken, 2);
        let one = r#"{"device":"d1","boot":1,"seq":1,"ts":5,"type":"t","readings":{"c":1.5}}"#;
        let two = one.replace("\"seq\":1", "\"seq\":2");
        let want = format!(r#"{{"gateway":"g","route":"r","batch":3,"replay":true,"events":[{one},{two}]}}"#);
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn a_full_batch_refuses_the_next_event_but_always_takes_the_first() {
        let header = Header { gateway: "g", route: "r", batch: 1, replay: false };
        let envelopes: Vec<Vec<u8>> = (1..=50).map(envelope).collect();
        for (max_bytes, json) in [(1, true), (1, false), (300, true), (300, false)] {
            let (out, taken) = if json {
                write::<json::Json>(&header, &envelopes, max_bytes)
            } else {
                write::<postcard::Postcard>(&header, &envelopes, max_bytes)
            };
            assert!(taken >= 1, "the first event always goes in");
            assert!(taken == 1 || out.len() <= max_bytes, "{} > {max_bytes}", out.len());
            assert!(taken < 50);
        }
        let (out, _) = write::<postcard::Postcard>(&header, &envelopes[..1], 4096);
        assert_eq!(edge_event::batch::decode_batch(&out).unwrap().events.len(), 1);
    }
}
