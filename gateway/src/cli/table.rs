//! Terminal tables of the operator commands: fixed-width columns, times in UTC
//! ([`format_time`]) and as ages ("3m ago"). Pure functions of rows and `now`, so they are
//! the same whether the rows came from the running gateway or from its journal.

use crate::api::wire::{DeadLetterRow, DeviceDetail};
use crate::time::format_time;

/// Dead letters as a table for the terminal.
pub fn dead_letters(rows: &[DeadLetterRow]) -> String {
    let mut out = format!("{:>8}  {:<20}  {:<32}  {}\n", "ID", "RECEIVED (UTC)", "TOPIC", "REASON");
    for row in rows {
        let reason: String = row.reason.chars().take(100).collect();
        out.push_str(&format!("{:>8}  {:<20}  {:<32}  {}\n", row.id, format_time(row.received_ms), row.topic, reason));
    }
    out
}

/// Devices as a terminal table: one line per device, then its latest readings indented.
pub fn devices(devices: &[DeviceDetail], now_ms: i64) -> String {
    let width = devices.iter().map(|d| d.summary.device.chars().count()).max().unwrap_or(0).max(12);
    let mut out = format!(
        "{:<width$} {:<21} {:>9} {:>14} {:>9} {:>9} {:>8}\n",
        "DEVICE", "LAST SEEN (UTC)", "AGO", "BOOT/SEQ", "EVENTS", "CONNECTED", "READINGS"
    );
    for d in devices {
        let s = &d.summary;
        let (seen, since) = match s.last_seen_ms {
            Some(ms) => (format_time(ms), ago(now_ms, ms)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let mark = match (s.boot, s.seq) {
            (Some(boot), Some(seq)) => format!("{boot}/{seq}"),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<width$} {:<21} {:>9} {:>14} {:>9} {:>9} {:>8}\n",
            s.device,
            seen,
            since,
            mark,
            s.events,
            connected(s.connected),
            s.reading_count
        ));
        for r in &d.readings {
            let value = match &r.unit {
                Some(unit) => format!("{} {unit}", r.value),
                None => r.value.to_string(),
            };
            let ts = r.ts_ms.map_or_else(|| "no device time".to_owned(), format_time);
            out.push_str(&format!(
                "    {:<22} {:<24} {} ({}, device time {ts})\n",
                r.name,
                value,
                r.kind,
                ago(now_ms, r.received_ms)
            ));
        }
    }
    out
}

/// A time since `ms` as "12s ago", "3m ago", "2h ago", "4d ago".
fn ago(now_ms: i64, ms: i64) -> String {
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn connected(c: Option<bool>) -> &'static str {
    match c {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}
