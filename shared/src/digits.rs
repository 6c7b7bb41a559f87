//! Decimal formatting of integers into a stack buffer, shared by the heap-free Ack writer
//! and the JSON writer.

/// Room for `u64::MAX` (20 digits).
pub(crate) const U64_DIGITS: usize = 20;

/// Writes `value` in decimal at the end of `buf` and returns the digits.
pub(crate) fn format_u64(mut value: u64, buf: &mut [u8; U64_DIGITS]) -> &[u8] {
    let mut start = U64_DIGITS;
    loop {
        start -= 1;
        // `value % 10` is below 10, so the cast is exact.
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[start..];
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_zero_and_the_extremes() {
        let mut buf = [0; U64_DIGITS];
        assert_eq!(format_u64(0, &mut buf), b"0");
        assert_eq!(format_u64(42, &mut buf), b"42");
        assert_eq!(format_u64(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
