//! The local read model: what the devices last said, for `/api/devices`, the status page and
//! `edge-gateway devices` — the query side, apart from the journal's queue.
//!
//! # Invariants
//!
//! - **Never ahead of the journal, and at most [`WRITE_EVERY`] behind it.** The writer
//!   writes it inside a transaction that commits events, but only once per
//!   [`WRITE_EVERY`] (and before it answers a devices query, and at shutdown): rewriting a
//!   device's row and its readings in every commit cost a few pages of flash writes per
//!   commit at a steady load (issue 16). Changes in between are folded in memory, so a
//!   query always sees every committed event; a rolled-back group leaves no trace; a crash
//!   (`kill -9`, power cut) can lose the read model's last few seconds — never an event.
//! - **Bounded.** One `device_view` row per device and one `latest_readings` row per
//!   (device, reading name); never events. Start-up reads nothing of it.
//! - **Cheap.** Per commit group, each device and each (device, name) is upserted once, with
//!   its newest value in the group ([`GroupView`]), not once per event.
//! - **Commit order is "latest".** The newest committed event wins, whatever its `ts` (device
//!   clocks can be wrong or unset). Retransmits (duplicates) and refused events
//!   (`reject_new`) are not committed and do not count. An event every route filtered out
//!   still counts: it was received and its readings are the device's latest. A `keep_last`
//!   event sent later is not counted again.
//! - **Connection state** is only known when the device side reports it
//!   ([`super::StoreHandle::device_connection`]); `connected` is NULL (unknown) otherwise.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// How often the writer writes the read model's changes (see the invariants above).
pub const WRITE_EVERY: Duration = Duration::from_secs(5);

/// One device as the read model knows it (`GET /api/devices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// Device id.
    pub device: String,
    /// Gateway receive time of its newest committed event (ms since the epoch).
    pub last_seen_ms: Option<i64>,
    /// Boot id of that event.
    pub boot: Option<u32>,
    /// Its seq.
    pub seq: Option<u32>,
    /// Events committed from it.
    pub events: u64,
    /// Connected to the device side: None when unknown.
    pub connected: Option<bool>,
    /// When `connected` last changed (ms since the epoch).
    pub connected_ms: Option<i64>,
    /// How many reading names it has a latest value for.
    pub reading_count: u64,
}

/// The latest value of one reading of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatestReading {
    /// Reading name.
    pub name: String,
    /// The value, as JSON (number, bool, string, or `{"hex": ..}` for bytes).
    pub value: serde_json::Value,
    /// Its unit, if the device named one.
    pub unit: Option<String>,
    /// Type of the event that carried it.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's `ts` (device clock, ms since the epoch); None when the device has no clock.
    pub ts_ms: Option<i64>,
    /// Gateway receive time (ms since the epoch).
    pub received_ms: i64,
}

/// A device with its latest readings (`GET /api/devices/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: DeviceSummary,
    /// Latest readings, by name.
    pub readings: Vec<LatestReading>,
}

/// What one commit group changes in the read model, folded per device and reading.
#[derive(Default)]
pub struct GroupView {
    devices: HashMap<String, DeviceDelta>,
}

#[derive(Default)]
struct DeviceDelta {
    last_seen_ms: i64,
    boot: u32,
    seq: u32,
    events: u64,
    /// Reading name -> its newest value in the group.
    readings: HashMap<String, Latest>,
}

/// A reading's newest value in a group, as decoded (fixed-size, no allocation per event:
/// the JSON text is made once per group, for the winner).
struct Latest {
    value: edge_event::Value,
    unit: Option<edge_event::Unit>,
    kind: edge_event::EventType,
    ts_ms: Option<i64>,
    received_ms: i64,
}

impl GroupView {
    /// Records a committed event (`payload` as stored: postcard). An undecodable payload
    /// still counts the event and moves last-seen; it has no readings to show.
    pub fn note(&mut self, device: &str, boot: u32, seq: u32, received_ms: i64, payload: &[u8]) {
        let delta = match self.devices.get_mut(device) {
            Some(delta) => delta,
            None => self.devices.entry(device.to_owned()).or_default(),
        };
        delta.last_seen_ms = delta.last_seen_ms.max(received_ms);
        delta.boot = boot;
        delta.seq = seq;
        delta.events += 1;
        let skimmed = super::skim::skim(payload).or_else(|| {
            // Not a layout the skimmer knows (a newer envelope version): the full decoder.
            let event = edge_event::decode(payload).ok()?;
            let ts_ms = match event.ts {
                edge_event::Timestamp::Millis(ms) => Some(ms),
                edge_event::Timestamp::Unknown => None,
            };
            let readings = event.readings.into_iter().map(|r| (r.name, r.value, r.unit)).collect();
            Some(super::skim::Skimmed { kind: event.kind, ts_ms, readings })
        });
        let Some(event) = skimmed else { return };
        let ts = event.ts_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
        for (name, value, unit) in event.readings {
            let entry = Latest { value, unit, kind: event.kind.clone(), ts_ms: ts, received_ms };
            match delta.readings.get_mut(name.as_str()) {
                Some(slot) => *slot = entry,
                None => {
                    delta.readings.insert(name.as_str().to_owned(), entry);
                }
            }
        }
    }

    /// Whether nothing was noted.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Folds the changes of a later group into these (its values win, counts add up).
    pub fn absorb(&mut self, later: GroupView) {
        for (device, delta) in later.devices {
            match self.devices.get_mut(&device) {
                None => {
                    self.devices.insert(device, delta);
                }
                Some(mine) => {
                    mine.last_seen_ms = mine.last_seen_ms.max(delta.last_seen_ms);
                    mine.boot = delta.boot;
                    mine.seq = delta.seq;
                    mine.events += delta.events;
                    mine.readings.extend(delta.readings);
                }
            }
        }
    }

    /// Writes the group's changes (inside the writer's transaction).
    pub fn write(&self, conn: &Connection) -> Result<(), rusqlite::Error> {
        let mut device = conn.prepare_cached(
            "INSERT INTO device_view (device, last_seen_ms, boot, seq, events) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(device) DO UPDATE SET last_seen_ms = MAX(coalesce(last_seen_ms, 0), excluded.last_seen_ms),
                 boot = excluded.boot, seq = excluded.seq, events = events + excluded.events",
        )?;
        let mut reading = conn.prepare_cached(
            "INSERT INTO latest_readings (device, name, value, unit, type, ts_ms, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(device, name) DO UPDATE SET value = excluded.value, unit = excluded.unit,
                 type = excluded.type, ts_ms = excluded.ts_ms, received_ms = excluded.received_ms",
        )?;
        for (id, delta) in &self.devices {
            device.execute(params![id, delta.last_seen_ms, delta.boot, delta.seq, delta.events as i64])?;
            for (name, r) in &delta.readings {
                let value = value_json(&r.value).to_string();
                let unit = r.unit.as_ref().map(|u| u.as_str());
                reading.execute(params![id, name, value, unit, r.kind.as_str(), r.ts_ms, r.received_ms])?;
            }
        }
        Ok(())
    }
}

/// A reading's value as the JSON the cloud batch carries (floats shortest round-trip).
fn value_json(value: &edge_event::Value) -> serde_json::Value {
    use edge_event::Value;
    let float = |text: String, fallback: f64| {
        text.parse::<f64>()
            .ok()
            .or(Some(fallback))
            .and_then(serde_json::Number::from_f64)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)
    };
    match value {
        // f32's Display is its shortest round-trip form: 0.1f32 shows as 0.1, not 0.10000000149.
        Value::F32(x) => float(x.to_string(), f64::from(*x)),
        Value::F64(x) => float(x.to_string(), *x),
        Value::I64(x) => serde_json::Value::from(*x),
        Value::Bool(x) => serde_json::Value::Bool(*x),
        Value::Text(x) => serde_json::Value::String(x.as_str().to_owned()),
        Value::Bytes(x) => {
            let hex: String = x.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::json!({ "hex": hex })
        }
    }
}

/// Records that `device` connected (`true`) or disconnected at `at_ms` (inside a transaction).
pub fn set_connection(conn: &Connection, device: &str, connected: bool, at_ms: i64) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO device_view (device, connected, connected_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(device) DO UPDATE SET connected = excluded.connected, connected_ms = excluded.connected_ms",
    )?
    .execute(params![device, connected, at_ms])?;
    Ok(())
}

const SUMMARY: &str = "SELECT v.device, v.last_seen_ms, v.boot, v.seq, v.events, v.connected, v.connected_ms,
        (SELECT count(*) FROM latest_readings r WHERE r.device = v.device)
    FROM device_view v";

fn summary(row: &rusqlite::Row<'_>) -> Result<DeviceSummary, rusqlite::Error> {
    Ok(DeviceSummary {
        device: row.get(0)?,
        last_seen_ms: row.get(1)?,
        boot: row.get(2)?,
        seq: row.get(3)?,
        events: row.get::<_, i64>(4)?.max(0) as u64,
        connected: row.get(5)?,
        connected_ms: row.get(6)?,
        reading_count: row.get::<_, i64>(7)?.max(0) as u64,
    })
}

/// Known devices by id, at most `limit`. Works on a read-only connection too.
pub fn list(conn: &Connection, limit: usize) -> Result<Vec<DeviceSummary>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&format!("{SUMMARY} ORDER BY v.device LIMIT ?1"))?;
    let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], summary)?;
    rows.collect()
}

/// One device with its latest readings (by name); None when unknown.
pub fn device(conn: &Connection, id: &str) -> Result<Option<DeviceDetail>, rusqlite::Error> {
    let Some(summary) =
        conn.prepare_cached(&format!("{SUMMARY} WHERE v.device = ?1"))?.query_row(params![id], summary).optional()?
    else {
        return Ok(None);
    };
    Ok(Some(DeviceDetail { summary, readings: readings(conn, id)? }))
}

/// The latest readings of `id`, by name.
pub fn readings(conn: &Connection, id: &str) -> Result<Vec<LatestReading>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, value, unit, type, ts_ms, received_ms FROM latest_readings WHERE device = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map(params![id], |r| {
        let value: String = r.get(1)?;
        Ok(LatestReading {
            name: r.get(0)?,
            value: serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value)),
            unit: r.get(2)?,
            kind: r.get(3)?,
            ts_ms: r.get(4)?,
            received_ms: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// What the read model is asked.
#[derive(Debug, Clone)]
pub enum Query {
    /// Devices by id; with `readings`, each with its latest readings.
    List {
        /// Include the readings.
        readings: bool,
        /// At most this many (the first by id).
        limit: usize,
    },
    /// One device.
    One(String),
}

/// Answers `query` (used by the writer thread and by the offline CLI).
pub fn answer(conn: &Connection, query: &Query) -> Result<Vec<DeviceDetail>, rusqlite::Error> {
    match query {
        Query::List { readings: with, limit } => list(conn, *limit)?
            .into_iter()
            .map(|summary| {
                let readings = if *with { readings(conn, &summary.device)? } else { Vec::new() };
                Ok(DeviceDetail { summary, readings })
            })
            .collect(),
        Query::One(id) => Ok(device(conn, id)?.into_iter().collect()),
    }
}
