//! One cloud publish from a run of queued rows, in the route's batch format
//! (`crate::format`: the JSON batch `{"gateway":..,"route":..,"batch":N,"events":[...]}`
//! by default). This file decides which rows go in; the format's writer encodes them.
//!
//! Invariants: a batch is a contiguous prefix of the rows it is given (the rest stay
//! queued, in order); it never exceeds `max_bytes` unless a single event alone does (which
//! config validation rules out: `batch.max_bytes` >= 4KiB > the largest event); with a
//! per-event topic (`{device}` / `{type}`) all its events share that topic; replayed rows
//! and first sends never share a batch, and a replayed JSON batch says `"replay":true`
//! after `"batch"` (a postcard one is marked by its topic, see `format/encoding.rs`).

use crate::format::{self, BatchFormat, BatchWriter, Entry, WithWriter};
use crate::routes::TopicTemplate;
use crate::store::Row;

/// A batch ready to publish.
#[derive(Debug)]
pub struct Built {
    /// Cloud topic.
    pub topic: String,
    /// Encoded batch.
    pub payload: Vec<u8>,
    /// Id of the first row it covers.
    pub first: i64,
    /// Id of the last row it covers.
    pub last: i64,
    /// Rows covered (including any undecodable row skipped inside the range).
    pub rows: usize,
    /// Receive times of the events, for the latency histogram.
    pub received_ms: Vec<i64>,
    /// Rows in the range whose payload could not be decoded (journal damage).
    pub undecodable: u64,
    /// Its rows are replayed copies (`edge-gateway replay`).
    pub replay: bool,
}

/// What a batch is made of besides its rows.
pub struct Header<'a> {
    /// `"gateway"`.
    pub gateway: &'a str,
    /// `"route"`.
    pub route: &'a str,
    /// `"batch"`.
    pub batch: u64,
    /// Cloud topic template.
    pub topic: &'a TopicTemplate,
    /// Size bound (of the encoded batch, before compression).
    pub max_bytes: usize,
    /// The body's format (`crate::format`).
    pub format: BatchFormat,
}

/// Builds a batch from a prefix of `rows`; None when `rows` is empty. The format is chosen
/// once here; the loop over the rows is compiled for each format.
pub fn build(header: &Header<'_>, rows: &[Row]) -> Option<Built> {
    header.format.with_writer(Build { header, rows })
}

/// [`build`]'s work, handed the format's writer.
struct Build<'h, 'r> {
    header: &'h Header<'h>,
    rows: &'r [Row],
}

impl WithWriter for Build<'_, '_> {
    type Output = Option<Built>;

    fn run<W: BatchWriter>(self, writer: W) -> Option<Built> {
        build_with(writer, self.header, self.rows)
    }
}

fn build_with<W: BatchWriter>(mut writer: W, header: &Header<'_>, rows: &[Row]) -> Option<Built> {
    let first_row = rows.first()?;
    let replay = first_row.replay;
    let mut payload = Vec::with_capacity(header.max_bytes.min(64 * 1024));
    let batch_header = format::Header { gateway: header.gateway, route: header.route, batch: header.batch, replay };
    writer.begin(&mut payload, &batch_header);
    let mut topic: Option<String> = None;
    let mut built = Built {
        topic: String::new(),
        payload: Vec::new(),
        first: first_row.id,
        last: first_row.id,
        rows: 0,
        received_ms: Vec::with_capacity(rows.len()),
        undecodable: 0,
        replay,
    };
    for row in rows {
        if row.replay != replay {
            break;
        }
        let event = match edge_event::decode(&row.payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::error!(row = row.id, error = %err, "journal row cannot be decoded; it is skipped and counted as dropped (invalid)");
                built.undecodable += 1;
                built.last = row.id;
                built.rows += 1;
                continue;
            }
        };
        let event_topic =
            || header.topic.render(header.gateway, header.route, event.device.as_str(), event.kind.as_str());
        if header.topic.per_event() {
            let this = event_topic();
            match &topic {
                Some(current) if *current != this => break,
                Some(_) => {}
                None => topic = Some(this),
            }
        } else if topic.is_none() {
            topic = Some(event_topic());
        }
        if !writer.push(&mut payload, Entry { event: &event, envelope: &row.payload }, header.max_bytes) {
            break;
        }
        built.received_ms.push(row.received_ms);
        built.last = row.id;
        built.rows += 1;
    }
    writer.finish(&mut payload);
    built.topic = topic.unwrap_or_else(|| header.topic.render(header.gateway, header.route, "", ""));
    built.payload = payload;
    Some(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, device: &str, seq: u32, kind: &str) -> Row {
        let json = format!(
            r#"{{"device":"{device}","boot":1,"seq":{seq},"ts":1764000000123,"type":"{kind}","readings":{{"celsius":21.5}}}}"#
        );
        let event = edge_event::json::from_slice(json.as_bytes()).unwrap();
        let mut buf = [0u8; edge_event::MAX_ENCODED_LEN];
        let len = edge_event::encode(&event, &mut buf).unwrap();
        Row { id, received_ms: 1000 + id, payload: buf[..len].to_vec(), replay: false }
    }

    fn header(topic: &TopicTemplate, max_bytes: usize) -> Header<'_> {
        Header { gateway: "gw-01", route: "telemetry", batch: 7, topic, max_bytes, format: BatchFormat::Json }
    }

    #[test]
    fn a_batch_is_the_design_json_with_every_event() {
        let topic = TopicTemplate::parse("gateways/{gateway}/telemetry").unwrap();
        let rows = [row(1, "d1", 1, "temperature"), row(2, "d2", 5, "temperature")];
        let built = build(&header(&topic, 65536), &rows).unwrap();
        assert_eq!(built.topic, "gateways/gw-01/telemetry");
        assert_eq!((built.first, built.last, built.rows), (1, 2, 2));
        let value: serde_json::Value = serde_json::from_slice(&built.payload).unwrap();
        assert_eq!(value["gateway"], "gw-01");
        assert_eq!(value["route"], "telemetry");
        assert_eq!(value["batch"], 7);
        assert_eq!(value["events"][1]["device"], "d2");
        assert_eq!(value["events"][1]["seq"], 5);
        assert_eq!(value["events"][0]["readings"]["celsius"], 21.5);
    }

    #[test]
    fn a_postcard_batch_carries_the_stored_envelopes_and_decodes_with_edge_event() {
        let topic = TopicTemplate::parse("t").unwrap();
        let rows: Vec<Row> = (1..=100).map(|i| row(i, "d1", i as u32, "temperature")).collect();
        let compact = Header { format: BatchFormat::Postcard, ..header(&topic, 1000) };
        let built = build(&compact, &rows).unwrap();
        assert!(built.payload.len() <= 1000);
        let decoded = edge_event::batch::decode_batch(&built.payload).unwrap();
        assert_eq!((decoded.gateway.as_str(), decoded.route.as_str(), decoded.batch), ("gw-01", "telemetry", 7));
        assert_eq!(decoded.events.len(), built.rows);
        assert_eq!(decoded.events[0], edge_event::decode(&rows[0].payload).unwrap());
        let json = build(&header(&topic, 1000), &rows).unwrap();
        assert!(built.rows > 2 * json.rows, "postcard fits more than twice the events of JSON");
    }

    #[test]
    fn a_batch_stops_before_max_bytes_and_leaves_the_rest_queued() {
        let topic = TopicTemplate::parse("t").unwrap();
        let rows: Vec<Row> = (1..=100).map(|i| row(i, "d1", i as u32, "temperature")).collect();
        let built = build(&header(&topic, 1000), &rows).unwrap();
        assert!(built.payload.len() <= 1000, "{}", built.payload.len());
        assert!(built.rows > 1 && built.rows < 100);
        assert_eq!(built.last, built.rows as i64);
        serde_json::from_slice::<serde_json::Value>(&built.payload).unwrap();
    }

    #[test]
    fn a_per_device_topic_cuts_the_batch_where_the_device_changes() {
        let topic = TopicTemplate::parse("c/{device}/{type}").unwrap();
        let rows = [row(1, "d1", 1, "t"), row(2, "d1", 2, "t"), row(3, "d2", 1, "t")];
        let built = build(&header(&topic, 65536), &rows).unwrap();
        assert_eq!(built.topic, "c/d1/t");
        assert_eq!((built.first, built.last), (1, 2));
    }

    #[test]
    fn replayed_rows_make_their_own_batches_marked_replay() {
        let topic = TopicTemplate::parse("t").unwrap();
        let replayed = |id, seq| Row { replay: true, ..row(id, "d1", seq, "t") };
        let rows = [row(1, "d1", 9, "t"), replayed(2, 1), replayed(3, 2), row(4, "d1", 10, "t")];
        let first = build(&header(&topic, 65536), &rows).unwrap();
        assert_eq!((first.first, first.last, first.replay), (1, 1, false));
        let value: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
        assert!(value.get("replay").is_none(), "a first send carries no replay mark: {value}");
        let second = build(&header(&topic, 65536), &rows[1..]).unwrap();
        assert_eq!((second.first, second.last, second.replay), (2, 3, true));
        let value: serde_json::Value = serde_json::from_slice(&second.payload).unwrap();
        assert_eq!(value["replay"], true);
        assert_eq!(value["events"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_undecodable_row_is_skipped_but_covered_so_the_queue_moves_on() {
        let topic = TopicTemplate::parse("t").unwrap();
        let rows = [
            row(1, "d1", 1, "t"),
            Row { id: 2, received_ms: 0, payload: vec![0xff, 0x00], replay: false },
            row(3, "d1", 3, "t"),
        ];
        let built = build(&header(&topic, 65536), &rows).unwrap();
        assert_eq!((built.rows, built.undecodable, built.last), (3, 1, 3));
        let value: serde_json::Value = serde_json::from_slice(&built.payload).unwrap();
        assert_eq!(value["events"].as_array().unwrap().len(), 2);
    }
}
