//! Typed sizes (`"64KiB"`) and durations (`"200ms"`) as they are written in the config.
//!
//! Both accept a bare integer too (bytes, milliseconds), so that `max_bytes = 1048576`
//! is not a surprise error. Units are case-sensitive where the meaning differs
//! (`"MB"` is 10^6, `"MiB"` is 2^20).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A number of bytes, written `"512B"`, `"64KiB"`, `"10MB"`, `"1GiB"` or as a bare integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `"64KiB"`-style text; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let unit = unit.trim();
        let expected = || format!("expected a size like \"64KiB\" or \"1GiB\", found {text:?}");
        let number: u64 = digits.parse().map_err(|_| expected())?;
        let factor: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(expected()),
        };
        number.checked_mul(factor).map(ByteSize).ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (name, factor) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{name}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Parses a duration written `"200ms"`, `"5s"`, `"10m"`, `"1h"`, `"7d"` or bare milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let expected = || format!("expected a duration like \"200ms\", \"5s\" or \"7d\", found {text:?}");
    let number: u64 = digits.parse().map_err(|_| expected())?;
    let millis: u64 = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(expected()),
    };
    number.checked_mul(millis).map(Duration::from_millis).ok_or_else(|| format!("duration {text:?} is too large"))
}

/// A size or duration as written: text, or a bare integer. Kept raw so that one bad value
/// is reported together with every other error instead of stopping the parse.
#[derive(Debug, Clone, PartialEq)]
pub enum RawUnit {
    /// `"64KiB"`, `"200ms"`.
    Text(String),
    /// `65536`.
    Int(i64),
}

impl<'de> Deserialize<'de> for RawUnit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Int(i64),
        }
        match Either::deserialize(deserializer) {
            Ok(Either::Text(text)) => Ok(RawUnit::Text(text)),
            Ok(Either::Int(int)) => Ok(RawUnit::Int(int)),
            Err(_) => Err(serde::de::Error::custom("expected a string such as \"64KiB\" / \"200ms\", or an integer")),
        }
    }
}

impl RawUnit {
    /// As a size.
    pub fn size(&self) -> Result<ByteSize, String> {
        match self {
            RawUnit::Text(text) => ByteSize::parse(text),
            RawUnit::Int(int) => {
                u64::try_from(*int).map(ByteSize).map_err(|_| format!("a size cannot be negative, found {int}"))
            }
        }
    }

    /// As a duration.
    pub fn duration(&self) -> Result<Duration, String> {
        match self {
            RawUnit::Text(text) => parse_duration(text),
            RawUnit::Int(int) => u64::try_from(*int)
                .map(Duration::from_millis)
                .map_err(|_| format!("a duration cannot be negative, found {int}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65_536)));
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("10MB"), Ok(ByteSize(10_000_000)));
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert_eq!(ByteSize::parse("512 B"), Ok(ByteSize(512)));
    }

    #[test]
    fn sizes_with_unknown_units_say_what_was_expected() {
        let err = ByteSize::parse("64kb").unwrap_err();
        assert_eq!(err, "expected a size like \"64KiB\" or \"1GiB\", found \"64kb\"");
        assert!(ByteSize::parse("").is_err());
        assert!(ByteSize::parse("KiB").is_err());
        assert!(ByteSize::parse("99999999999999TiB").is_err());
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(65_536).to_string(), "64KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn durations_parse_every_unit() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_millis(15)));
        assert!(parse_duration("5 sec").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn raw_units_reject_negative_integers() {
        assert!(RawUnit::Int(-1).size().is_err());
        assert!(RawUnit::Int(-1).duration().is_err());
        assert_eq!(RawUnit::Int(10).size(), Ok(ByteSize(10)));
    }
}
