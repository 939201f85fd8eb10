//! RTP for the AI bridge: parsing the relay's datagrams (RFC 3550 §5.1), writing our own
//! fixed 12-byte headers, RFC 4733 telephone-events, and deriving stream identities from a
//! seed.
//!
//! Does: a robust header parse (version, CSRC list, header extension, padding) that rejects
//! malformed packets with an error instead of panicking; the RFC 4733 §2.3 event payload.
//!
//! Never: allocates, reads a clock or draws random numbers (identities come from the seed
//! through splitmix64).

/// Bytes of the fixed RTP header (RFC 3550 §5.1), without CSRCs or extension.
pub const HEADER_LEN: usize = 12;

/// A parsed RTP packet borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Why a datagram is not a usable RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("shorter than the 12-byte RTP header")]
    TooShort,
    #[error("RTP version {0}, not 2")]
    Version(u8),
    #[error("CSRC list runs past the end")]
    Csrc,
    #[error("header extension runs past the end")]
    Extension,
    #[error("bad padding count")]
    Padding,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses an RTP packet (RFC 3550 §5.1, §5.3.1 extension).
pub fn parse(packet: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let (&b0, &b1) = match packet {
        [b0, b1, ..] if packet.len() >= HEADER_LEN => (b0, b1),
        _ => return Err(RtpError::TooShort),
    };
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtpError::Version(version));
    }
    let padding = b0 & 0x20 != 0;
    let extension = b0 & 0x10 != 0;
    let csrc_count = usize::from(b0 & 0x0f);
    let mut end = packet.len();
    let mut start = HEADER_LEN + 4 * csrc_count;
    if start > end {
        return Err(RtpError::Csrc);
    }
    if extension {
        // §5.3.1: 16 bits profile-defined, 16 bits length in 32-bit words (excluding the
        // 4-byte extension header itself).
        let words = be16(packet, start + 2).ok_or(RtpError::Extension)?;
        start += 4 + 4 * usize::from(words);
        if start > end {
            return Err(RtpError::Extension);
        }
    }
    if padding {
        // §5.1: the last octet counts the padding octets, itself included, so it can't be 0.
        let count = usize::from(packet[end - 1]);
        if count == 0 || count > end - start {
            return Err(RtpError::Padding);
        }
        end -= count;
    }
    Ok(RtpPacket {
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7f,
        sequence_number: be16(packet, 2).ok_or(RtpError::TooShort)?,
        timestamp: be32(packet, 4).ok_or(RtpError::TooShort)?,
        ssrc: be32(packet, 8).ok_or(RtpError::TooShort)?,
        payload: &packet[start..end],
    })
}

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

/// An RFC 4733 §2.3 telephone-event payload (the first event block; redundant blocks that
/// may follow are not needed, the timestamp identifies the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    /// The E bit: the last packets of the event (retransmitted up to three times, §2.5.1.4).
    pub end: bool,
    pub volume: u8,
    /// In timestamp units since the event's RTP timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let [event, flags, d0, d1, ..] = *payload else {
            return None;
        };
        Some(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The DTMF digit of events 0-15 (RFC 4733 §3.2 table 7); `None` for other events.
    pub fn digit(self) -> Option<char> {
        event_digit(self.event)
    }
}

/// RFC 4733 §3.2: 0-9, then `*` (10), `#` (11), A-D (12-15).
pub fn event_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
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

    fn header(b0: u8, b1: u8) -> Vec<u8> {
        let mut p = vec![b0, b1, 0x12, 0x34, 0, 0, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef];
        p.truncate(HEADER_LEN);
        p
    }

    #[test]
    fn plain_packet() {
        let mut p = header(0x80, 0x80);
        p.extend_from_slice(&[1, 2, 3]);
        let r = parse(&p).unwrap();
        assert!(r.marker);
        assert_eq!(r.payload_type, 0);
        assert_eq!(r.sequence_number, 0x1234);
        assert_eq!(r.timestamp, 256);
        assert_eq!(r.ssrc, 0xdead_beef);
        assert_eq!(r.payload, &[1, 2, 3]);
        // An empty payload is legal.
        assert_eq!(parse(&header(0x80, 8)).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        // 2 CSRCs, an extension of 1 word, 3 bytes of padding.
        let mut p = header(0x80 | 0x20 | 0x10 | 2, 8);
        p.extend_from_slice(&[0xaa; 8]); // CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // extension
        p.extend_from_slice(&[5, 6, 7]); // payload
        p.extend_from_slice(&[0, 0, 3]); // padding
        let r = parse(&p).unwrap();
        assert_eq!(r.payload_type, 8);
        assert!(!r.marker);
        assert_eq!(r.payload, &[5, 6, 7]);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse(&[]), Err(RtpError::TooShort));
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort));
        assert_eq!(parse(&header(0x40, 0)), Err(RtpError::Version(1)));
        assert_eq!(parse(&header(0x00, 0)), Err(RtpError::Version(0)));
        // CSRC count 15 but no room.
        assert_eq!(parse(&header(0x8f, 0)), Err(RtpError::Csrc));
        // Extension bit without the extension header.
        assert_eq!(parse(&header(0x90, 0)), Err(RtpError::Extension));
        // Extension length running past the end.
        let mut p = header(0x90, 0);
        p.extend_from_slice(&[0, 0, 0xff, 0xff]);
        assert_eq!(parse(&p), Err(RtpError::Extension));
        // Padding: count 0, count longer than the payload, padding bit on a bare header.
        let mut p = header(0xa0, 0);
        p.extend_from_slice(&[1, 0]);
        assert_eq!(parse(&p), Err(RtpError::Padding));
        let mut p = header(0xa0, 0);
        p.extend_from_slice(&[1, 9]);
        assert_eq!(parse(&p), Err(RtpError::Padding));
        // Padding consuming the whole payload is fine.
        let mut p = header(0xa0, 0);
        p.extend_from_slice(&[0, 2]);
        assert_eq!(parse(&p).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 7u64;
        for len in 0..64 {
            for _ in 0..64 {
                let bytes: Vec<u8> = (0..len).map(|_| splitmix64(&mut state) as u8).collect();
                let _ = parse(&bytes);
                let _ = TelephoneEvent::parse(&bytes);
            }
        }
    }

    #[test]
    fn header_round_trips() {
        let mut out = [0u8; 20];
        assert!(write_header(&mut out, true, 8, 65535, u32::MAX, 42));
        let r = parse(&out).unwrap();
        assert!(r.marker);
        assert_eq!(
            (r.payload_type, r.sequence_number, r.timestamp, r.ssrc),
            (8, 65535, u32::MAX, 42)
        );
        assert_eq!(r.payload.len(), 8);
        assert!(!write_header(&mut [0u8; 11], false, 0, 0, 0, 0));
    }

    #[test]
    fn telephone_events() {
        let e = TelephoneEvent::parse(&[11, 0x80 | 10, 0x03, 0x20]).unwrap();
        assert_eq!(e.digit(), Some('#'));
        assert!(e.end);
        assert_eq!(e.volume, 10);
        assert_eq!(e.duration, 800);
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
        assert_eq!(event_digit(5), Some('5'));
        assert_eq!(event_digit(10), Some('*'));
        assert_eq!(event_digit(12), Some('A'));
        assert_eq!(event_digit(15), Some('D'));
        assert_eq!(event_digit(16), None, "flash is not a digit");
        assert_eq!(normalize_digit('b'), Some('B'));
        assert_eq!(normalize_digit('#'), Some('#'));
        assert_eq!(normalize_digit('x'), None);
        assert_eq!(normalize_digit('E'), None);
    }
}
