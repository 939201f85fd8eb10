//! RTP for the AI bridge: writing our own fixed 12-byte headers, normalising INFO digits,
//! and deriving stream identities from a seed. Parsing the relay's datagrams and RFC 4733
//! events is `media::rtp`'s ([`RtpPacket`](crate::media::rtp::RtpPacket),
//! [`TelephoneEvent`](crate::media::rtp::TelephoneEvent)), the same code the relay uses.
//!
//! Never: allocates, reads a clock or draws random numbers (identities come from the seed
//! through splitmix64).

/// Bytes of the fixed RTP header (RFC 3550 §5.1), without CSRCs or extension.
pub const HEADER_LEN: usize = crate::media::rtp::RTP_FIXED_HEADER_LEN;

/// Writes a 12-byte header (V=2, no padding/extension/CSRC) into `out[..12]`. Returns false
/// (writing nothing) when `out` is shorter.
pub fn write_header(
    out: &mut [u8],
    marker: bool,
    payload_type: u8,
    sequence_number: u16,
    timestamp: u32,
    ssrc: u32,
) -> bool {
    let Some(h) = out.get_mut(..HEADER_LEN) else {
        return false;
    };
    h[0] = 0x80;
    h[1] = (u8::from(marker) << 7) | (payload_type & 0x7f);
    h[2..4].copy_from_slice(&sequence_number.to_be_bytes());
    h[4..8].copy_from_slice(&timestamp.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    true
}

/// A DTMF digit from SIP INFO normalised (`a`-`d` to upper case); `None` for anything that
/// is not a DTMF key.
pub fn normalize_digit(digit: char) -> Option<char> {
    let d = digit.to_ascii_uppercase();
    matches!(d, '0'..='9' | '*' | '#' | 'A'..='D').then_some(d)
}

/// splitmix64: a well-mixed sequence of u64 from a seed (no RNG draws in sans-IO code).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::RtpPacket;

    #[test]
    fn header_round_trips() {
        let mut out = [0u8; 20];
        assert!(write_header(&mut out, true, 8, 65535, u32::MAX, 42));
        let r = RtpPacket::new_checked(&out[..]).unwrap();
        assert!(r.marker());
        assert_eq!(
            (
                r.payload_type(),
                r.sequence_number(),
                r.timestamp(),
                r.ssrc()
            ),
            (8, 65535, u32::MAX, 42)
        );
        assert_eq!(r.payload().len(), 8);
        assert!(!write_header(&mut [0u8; 11], false, 0, 0, 0, 0));
    }

    #[test]
    fn info_digits_are_normalised() {
        assert_eq!(normalize_digit('b'), Some('B'));
        assert_eq!(normalize_digit('#'), Some('#'));
        assert_eq!(normalize_digit('x'), None);
        assert_eq!(normalize_digit('E'), None);
    }
}
