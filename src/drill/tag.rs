//! The drill's audio markers: how a synthetic caller's RTP payload says which call it belongs
//! to, and how an echoing peer stamps the payload with its own identity, so the caller can
//! tell from each packet it hears whether audio flows both ways and which peer is answering.
//!
//! Layout of the first 7 payload bytes (the rest is μ-law silence, 0xFF):
//! `[0..4]` magic (`HFDC` from the caller, `HFDP` once a peer echoed it), `[4]` the peer index
//! (0 from the caller), `[5..7]` the call index, big-endian. A peer overwrites `[0..5]` only,
//! so the call index survives the round trip and cross-talk between calls is visible.
//!
//! Pure functions; never does I/O.

/// Magic of a payload the caller sent.
pub const CALLER_MAGIC: &[u8; 4] = b"HFDC";
/// Magic of a payload a peer echoed.
pub const PEER_MAGIC: &[u8; 4] = b"HFDP";
/// Bytes of one 20 ms PCMU frame.
pub const FRAME_BYTES: usize = 160;

/// The caller's payload for call `call_index`.
pub fn caller_payload(call_index: u16) -> [u8; FRAME_BYTES] {
    let mut p = [0xFFu8; FRAME_BYTES];
    p[..4].copy_from_slice(CALLER_MAGIC);
    p[4] = 0;
    p[5..7].copy_from_slice(&call_index.to_be_bytes());
    p
}

/// Stamps `payload` as echoed by peer `peer_index` (payloads shorter than the header are
/// left alone: they carry no marker to keep).
pub fn stamp_echo(payload: &mut [u8], peer_index: u8) {
    if let Some(head) = payload.get_mut(..5) {
        head[..4].copy_from_slice(PEER_MAGIC);
        head[4] = peer_index;
    }
}

/// An echoed marker found in a payload: `(peer index, call index)`. Searched anywhere in the
/// payload, because a WebSocket bridge may re-frame the audio.
pub fn find_echo(payload: &[u8]) -> Option<(u8, u16)> {
    let at = payload.windows(4).position(|w| w == PEER_MAGIC)?;
    let rest = payload.get(at + 4..at + 7)?;
    Some((rest[0], u16::from_be_bytes([rest[1], rest[2]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_payload_names_peer_and_call() {
        let mut p = caller_payload(513);
        assert_eq!(find_echo(&p), None, "the caller's own payload is no echo");
        stamp_echo(&mut p, 7);
        assert_eq!(find_echo(&p), Some((7, 513)));
        // Re-framed: the marker starts mid-payload.
        let mut shifted = vec![0xFF; 37];
        shifted.extend_from_slice(&p[..100]);
        assert_eq!(find_echo(&shifted), Some((7, 513)));
        // Truncated marker, comfort noise, empty: nothing.
        assert_eq!(find_echo(&p[..6]), None);
        assert_eq!(find_echo(&[0x7E; 160]), None);
        let mut short = [1u8, 2];
        stamp_echo(&mut short, 1);
        assert_eq!(short, [1, 2]);
    }
}
