//! COBS decoding in place (Consistent Overhead Byte Stuffing), the inverse of the encoder
//! postcard's `to_slice_cobs` uses. Kept here, a few lines, so the decoder can read the
//! version byte before the event, which postcard's `from_bytes_cobs` cannot.

use crate::error::DecodeError;

/// Decodes the COBS-encoded `buf` (without its `0x00` terminator) in place and returns the
/// decoded length. The output never overtakes the input, so one buffer suffices.
pub(crate) fn decode_in_place(buf: &mut [u8]) -> Result<usize, DecodeError> {
    let len = buf.len();
    let mut read = 0;
    let mut write = 0;
    while read < len {
        let code = usize::from(buf[read]);
        if code == 0 {
            return Err(DecodeError::Malformed { reason: "zero byte inside a COBS frame" });
        }
        read += 1;
        let end = read + code - 1;
        if end > len {
            return Err(DecodeError::Malformed { reason: "COBS block runs past the end of the frame" });
        }
        if buf[read..end].contains(&0) {
            return Err(DecodeError::Malformed { reason: "zero byte inside a COBS frame" });
        }
        buf.copy_within(read..end, write);
        write += end - read;
        read = end;
        // A full block (code 0xFF) carries no zero; the last block's zero is the terminator.
        if code != 0xFF && read < len {
            buf[write] = 0;
            write += 1;
        }
    }
    Ok(write)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decoded(encoded: &[u8]) -> Result<heapless::Vec<u8, 600>, DecodeError> {
        let mut buf = heapless::Vec::<u8, 600>::from_slice(encoded).expect("test input fits");
        let len = decode_in_place(&mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }

    #[test]
    fn decodes_the_textbook_examples() {
        assert_eq!(decoded(&[0x01, 0x01]).unwrap(), [0x00]);
        assert_eq!(decoded(&[0x01, 0x01, 0x01]).unwrap(), [0x00, 0x00]);
        assert_eq!(decoded(&[0x03, 0x11, 0x22, 0x02, 0x33]).unwrap(), [0x11, 0x22, 0x00, 0x33]);
        assert_eq!(decoded(&[0x05, 0x11, 0x22, 0x33, 0x44]).unwrap(), [0x11, 0x22, 0x33, 0x44]);
        assert!(decoded(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_full_254_byte_block_carries_no_implied_zero() {
        let mut encoded = [0x01u8; 256];
        encoded[0] = 0xFF;
        encoded[255] = 0x01;
        let out = decoded(&encoded).unwrap();
        assert_eq!(out.len(), 254);
        assert!(out.iter().all(|&b| b == 0x01));
    }

    #[test]
    fn rejects_a_zero_byte_and_a_block_past_the_end() {
        assert!(matches!(decoded(&[0x03, 0x11, 0x00]), Err(DecodeError::Malformed { .. })));
        assert!(matches!(decoded(&[0x05, 0x11]), Err(DecodeError::Malformed { .. })));
    }
}
