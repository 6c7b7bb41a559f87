//! How a route's batches are encoded on the wire: `format` (one of the registered
//! [`BatchFormat`]s: JSON, or the compact postcard batch of `edge_event::batch`) and
//! `compress` (none, zstd, lz4).
//!
//! The encoding is signalled in the topic: plain JSON (the default) is published on the
//! route's topic as is; any other encoding adds one last level naming it, `json.zstd`,
//! `json.lz4`, `postcard`, `postcard.zstd` or `postcard.lz4`, so a consumer can subscribe
//! to `{to}/#` and decode by the last level. The cloud link is MQTT 3.1.1, which has no
//! content-type property; a topic level works with every broker and every rule engine.
//! zstd output is a standard zstd frame; lz4 output is a standard LZ4 frame (`lz4 -d`).

use std::io::Write;
use std::sync::OnceLock;

use super::BatchFormat;

/// Compression of the encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// As encoded (default).
    None,
    /// zstd, level 3.
    Zstd,
    /// LZ4 frame.
    Lz4,
}

/// A route's wire encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Body format.
    pub format: BatchFormat,
    /// Compression.
    pub compress: Compression,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding { format: BatchFormat::default(), compress: Compression::None }
    }
}

impl Compression {
    /// Every compression, the default first.
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Zstd, Compression::Lz4];

    /// What it adds to the format's name in the topic level (`postcard.zstd`).
    fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zstd",
            Compression::Lz4 => ".lz4",
        }
    }
}

impl Encoding {
    /// The last topic level that names this encoding (`{format}[.{compression}]`); None
    /// for the default format uncompressed.
    pub fn topic_suffix(self) -> Option<&'static str> {
        if self.format.bare_topic() && self.compress == Compression::None {
            return None;
        }
        // Every level, made once: a handful of short strings for the life of the process.
        static LEVELS: OnceLock<Vec<(Encoding, &'static str)>> = OnceLock::new();
        let levels = LEVELS.get_or_init(|| {
            let all = BatchFormat::ALL
                .iter()
                .flat_map(|&format| Compression::ALL.map(|compress| Encoding { format, compress }));
            all.map(|e| (e, &*Box::leak(format!("{}{}", e.format.name(), e.compress.suffix()).into_boxed_str())))
                .collect()
        });
        levels.iter().find(|(encoding, _)| *encoding == self).map(|(_, level)| *level)
    }

    /// The topic a batch of this encoding is published on, from the route's rendered topic:
    /// plus the encoding's level, if any. A replayed postcard batch (its body has no room
    /// for a mark) goes one level deeper, `{to}/replay/postcard[.zstd|.lz4]`; a replayed
    /// JSON batch keeps the topic and says `"replay":true` in its body.
    pub fn topic(self, base: String, replay: bool) -> String {
        match (self.topic_suffix(), replay && !self.format.replay_in_body()) {
            (Some(suffix), true) => format!("{base}/replay/{suffix}"),
            (Some(suffix), false) => format!("{base}/{suffix}"),
            (None, _) => base,
        }
    }

    /// Compresses an encoded batch.
    pub fn compress(self, body: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self.compress {
            Compression::None => Ok(body),
            Compression::Zstd => zstd::bulk::compress(&body, 3),
            Compression::Lz4 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(body.len() / 2));
                encoder.write_all(&body)?;
                encoder.finish().map_err(std::io::Error::other)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Realistic telemetry: 500 events of a multi-channel environmental sensor fleet.
    fn telemetry() -> Vec<u8> {
        let mut out = br#"{"gateway":"gw-01","route":"telemetry","batch":1,"events":["#.to_vec();
        for i in 0..500u32 {
            if i > 0 {
                out.push(b',');
            }
            let line = format!(
                r#"{{"device":"env-{:03}","boot":3,"seq":{},"ts":{},"type":"environment","readings":{{"celsius":{:.2},"humidity":{:.1},"pressure_hpa":{:.1},"co2_ppm":{}}}}}"#,
                i % 40,
                1000 + i,
                1_764_000_000_000u64 + u64::from(i) * 250,
                20.0 + f64::from(i % 17) * 0.13,
                40.0 + f64::from(i % 11) * 0.7,
                1013.0 + f64::from(i % 5) * 0.3,
                400 + i % 90
            );
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(b"]}");
        out
    }

    #[test]
    fn zstd_and_lz4_round_trip_and_shrink_telemetry() {
        let body = telemetry();
        let zstd_enc = Encoding { format: BatchFormat::Json, compress: Compression::Zstd };
        let zstd_bytes = zstd_enc.compress(body.clone()).unwrap();
        assert_eq!(zstd::bulk::decompress(&zstd_bytes, 1 << 20).unwrap(), body);
        let lz4_enc = Encoding { format: BatchFormat::Json, compress: Compression::Lz4 };
        let lz4_bytes = lz4_enc.compress(body.clone()).unwrap();
        let mut back = Vec::new();
        lz4_flex::frame::FrameDecoder::new(&lz4_bytes[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, body);
        println!(
            "500-event JSON batch: {} B; zstd {} B ({:.1}%); lz4 {} B ({:.1}%)",
            body.len(),
            zstd_bytes.len(),
            100.0 * zstd_bytes.len() as f64 / body.len() as f64,
            lz4_bytes.len(),
            100.0 * lz4_bytes.len() as f64 / body.len() as f64
        );
        assert!(zstd_bytes.len() * 4 < body.len(), "zstd saves at least 75% on telemetry JSON");
        assert!(lz4_bytes.len() * 2 < body.len(), "lz4 saves at least 50%");
    }

    #[test]
    fn replayed_postcard_batches_go_one_level_deeper_json_ones_keep_their_topic() {
        let postcard = Encoding { format: BatchFormat::Postcard, compress: Compression::Lz4 };
        assert_eq!(postcard.topic("gw/t".into(), false), "gw/t/postcard.lz4");
        assert_eq!(postcard.topic("gw/t".into(), true), "gw/t/replay/postcard.lz4");
        let zstd = Encoding { format: BatchFormat::Json, compress: Compression::Zstd };
        assert_eq!(zstd.topic("gw/t".into(), true), "gw/t/json.zstd");
        assert_eq!(Encoding::default().topic("gw/t".into(), true), "gw/t");
    }

    #[test]
    fn only_non_default_encodings_change_the_topic() {
        assert_eq!(Encoding::default().topic_suffix(), None);
        let postcard = Encoding { format: BatchFormat::Postcard, compress: Compression::Zstd };
        assert_eq!(postcard.topic_suffix(), Some("postcard.zstd"));
    }
}
