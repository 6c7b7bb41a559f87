//! The JSON writer: appends bytes directly, with RFC 8259 string escaping, integer digits
//! from [`crate::digits`] and shortest round-trip floats from `ryu`.

use alloc::vec::Vec;

use crate::digits::{format_u64, U64_DIGITS};
use crate::event::{Event, Reading, Timestamp, Value};

/// Appends `event` as one JSON object to `out` (which may already hold other JSON).
///
/// ```
/// use edge_event::{json, Event, Reading, Timestamp, Value};
///
/// # fn main() -> Result<(), edge_event::TooLong> {
/// let mut event = Event::new("d1", 1, 42, Timestamp::Millis(1_764_000_000_123), "temperature")?;
/// event.push_reading(Reading::new("celsius", Value::F32(21.5))?)?;
/// let mut out = b"[".to_vec();
/// json::write(&event, &mut out);
/// out.push(b']');
/// assert_eq!(
///     out,
///     br#"[{"device":"d1","boot":1,"seq":42,"ts":1764000000123,"type":"temperature","readings":{"celsius":21.5}}]"#
/// );
/// # Ok(())
/// # }
/// ```
pub fn write(event: &Event, out: &mut Vec<u8>) {
    out.reserve(96 + 32 * event.readings.len() + 32 * event.meta.len());
    out.extend_from_slice(b"{\"device\":");
    write_str(out, &event.device);
    out.extend_from_slice(b",\"boot\":");
    write_u64(out, u64::from(event.boot));
    out.extend_from_slice(b",\"seq\":");
    write_u64(out, u64::from(event.seq));
    out.extend_from_slice(b",\"ts\":");
    match event.ts {
        Timestamp::Millis(ms) => write_u64(out, ms),
        Timestamp::Unknown => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"type\":");
    write_str(out, &event.kind);
    out.extend_from_slice(b",\"readings\":{");
    for (i, reading) in event.readings.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_reading(out, reading);
    }
    out.push(b'}');
    if !event.meta.is_empty() {
        out.extend_from_slice(b",\"meta\":{");
        for (i, entry) in event.meta.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, &entry.key);
            out.push(b':');
            write_str(out, &entry.value);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// The JSON object of `event` in a new `Vec`.
pub fn to_vec(event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    write(event, &mut out);
    out
}

fn write_reading(out: &mut Vec<u8>, reading: &Reading) {
    write_str(out, &reading.name);
    out.push(b':');
    match &reading.unit {
        None => write_value(out, &reading.value),
        Some(unit) => {
            out.extend_from_slice(b"{\"value\":");
            write_value(out, &reading.value);
            out.extend_from_slice(b",\"unit\":");
            write_str(out, unit);
            out.push(b'}');
        }
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::F32(v) if v.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*v).as_bytes());
        }
        Value::F64(v) if v.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*v).as_bytes());
        }
        Value::F32(_) | Value::F64(_) => out.extend_from_slice(b"null"),
        Value::I64(v) => {
            if *v < 0 {
                out.push(b'-');
            }
            write_u64(out, v.unsigned_abs());
        }
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Text(text) => write_str(out, text),
        Value::Bytes(bytes) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"{\"hex\":\"");
            for &b in bytes {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0F)]);
            }
            out.extend_from_slice(b"\"}");
        }
    }
}

fn write_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0; U64_DIGITS];
    out.extend_from_slice(format_u64(value, &mut digits));
}

/// Writes `s` as a JSON string: `"` and `\` escaped, control characters as `\n`-style or
/// `\u00XX` escapes (RFC 8259 section 7); everything else, including non-ASCII, as is.
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0C => b'f',
            0x00..=0x1F => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0F)]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> alloc::string::String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        alloc::string::String::from_utf8(out).expect("the writer emits UTF-8")
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_characters_only() {
        assert_eq!(escaped("plain"), r#""plain""#);
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(escaped("\u{0}\u{1f}"), r#""\u0000\u001f""#);
        assert_eq!(escaped("°C/é\u{7f}"), "\"°C/é\u{7f}\"");
    }

    #[test]
    fn writes_floats_so_they_read_back_as_floats() {
        let mut out = Vec::new();
        write_value(&mut out, &Value::F64(21.0));
        out.push(b' ');
        write_value(&mut out, &Value::F32(0.1));
        out.push(b' ');
        write_value(&mut out, &Value::F64(1e300));
        out.push(b' ');
        write_value(&mut out, &Value::F32(f32::NAN));
        out.push(b' ');
        write_value(&mut out, &Value::I64(i64::MIN));
        assert_eq!(out, b"21.0 0.1 1e300 null -9223372036854775808");
    }
}
