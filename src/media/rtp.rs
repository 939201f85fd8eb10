//! Zero-copy views over RTP and RTCP packets, and first-byte demultiplexing.
//!
//! Does: validate an RTP fixed header (RFC 3550 §5.1: version, padding, CSRC list, header
//! extension) and expose typed accessors and in-place setters over the caller's buffer;
//! classify a datagram as STUN / DTLS / RTP / RTCP (RFC 7983 §7, RFC 5761 §4); rewrite the
//! sender SSRC of every packet in a compound RTCP packet (RFC 3550 §6.4); read an RFC 4733
//! telephone-event payload for logging and tests.
//!
//! Never: allocates, copies a payload, panics on wire data (every malformed input maps to a
//! [`PacketError`]), or looks at anything beyond the header it needs.

/// Why a datagram is not a usable RTP/RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the fixed header (12 bytes RTP, 8 bytes RTCP, 4 bytes telephone-event).
    #[error("packet too short: {len} bytes")]
    TooShort { len: usize },
    /// Version field is not 2 (RFC 3550 §5.1).
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The CSRC count says more CSRCs than the datagram holds.
    #[error("CSRC list runs past the end of the packet")]
    CsrcBeyondLength,
    /// The header extension length runs past the end of the packet.
    #[error("header extension runs past the end of the packet")]
    ExtensionBeyondLength,
    /// P bit set but the last octet is 0 or counts more than the payload (RFC 3550 §5.1).
    #[error("invalid padding count")]
    BadPadding,
    /// Not an RTCP packet type (RFC 5761 §4: 192..=223).
    #[error("not an RTCP packet type: {0}")]
    NotRtcp(u8),
    /// An RTCP length field runs past the end of the datagram (RFC 3550 §6.4.1).
    #[error("RTCP length runs past the end of the packet")]
    RtcpLengthBeyondBuffer,
}

/// What a datagram arriving on a media port is, by its first byte (RFC 7983 §7) and, for
/// the RTP range, its second byte (RFC 5761 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    /// 0..=3: STUN (ICE connectivity checks).
    Stun,
    /// 16..=19: ZRTP.
    Zrtp,
    /// 20..=63: DTLS (DTLS-SRTP key exchange).
    Dtls,
    /// 64..=79: TURN channel data.
    TurnChannel,
    /// 128..=191 with a second byte outside 192..=223.
    Rtp,
    /// 128..=191 with a second byte (M bit + PT) in 192..=223.
    Rtcp,
    /// Empty, or a first byte no RFC 7983 range claims.
    Unknown,
}

/// Classify a datagram without validating it (RFC 7983 §7, RFC 5761 §4).
///
/// RFC 5761 §4 reserves RTP payload types 64..=95 so that, with the marker bit, the whole
/// second octet of RTCP (192..=223) never collides with RTP.
#[inline]
pub fn classify(buf: &[u8]) -> PacketClass {
    match buf.first() {
        None => PacketClass::Unknown,
        Some(&b) => match b {
            0..=3 => PacketClass::Stun,
            16..=19 => PacketClass::Zrtp,
            20..=63 => PacketClass::Dtls,
            64..=79 => PacketClass::TurnChannel,
            128..=191 => match buf.get(1) {
                Some(192..=223) => PacketClass::Rtcp,
                _ => PacketClass::Rtp,
            },
            _ => PacketClass::Unknown,
        },
    }
}

/// RTP fixed header length in octets (RFC 3550 §5.1).
pub const RTP_FIXED_HEADER_LEN: usize = 12;

/// A validated RTP packet over a borrowed buffer. Construct with [`RtpPacket::new_checked`];
/// every accessor afterwards reads inside the validated header and cannot panic.
#[derive(Debug)]
pub struct RtpPacket<T> {
    buf: T,
    header_len: usize,
    payload_end: usize,
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Validate the header (RFC 3550 §5.1) and wrap the buffer. The whole buffer is the
    /// packet: pass exactly the received datagram.
    pub fn new_checked(buf: T) -> Result<Self, PacketError> {
        let b = buf.as_ref();
        let len = b.len();
        if len < RTP_FIXED_HEADER_LEN {
            return Err(PacketError::TooShort { len });
        }
        let version = b[0] >> 6;
        if version != 2 {
            return Err(PacketError::BadVersion(version));
        }
        let cc = usize::from(b[0] & 0x0f);
        let mut header_len = RTP_FIXED_HEADER_LEN + 4 * cc;
        if len < header_len {
            return Err(PacketError::CsrcBeyondLength);
        }
        if b[0] & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words (excluding
            // the 4-octet extension header itself).
            let ext = b
                .get(header_len..header_len + 4)
                .ok_or(PacketError::ExtensionBeyondLength)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            header_len += 4 + 4 * words;
            if len < header_len {
                return Err(PacketError::ExtensionBeyondLength);
            }
        }
        let mut payload_end = len;
        if b[0] & 0x20 != 0 {
            // RFC 3550 §5.1: the last octet counts the padding octets including itself.
            let pad = usize::from(b[len - 1]);
            if pad == 0 || pad > len - header_len {
                return Err(PacketError::BadPadding);
            }
            payload_end = len - pad;
        }
        Ok(RtpPacket {
            buf,
            header_len,
            payload_end,
        })
    }

    #[inline]
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Version (always 2 once validated).
    pub fn version(&self) -> u8 {
        self.b()[0] >> 6
    }
    /// P bit.
    pub fn padding(&self) -> bool {
        self.b()[0] & 0x20 != 0
    }
    /// X bit.
    pub fn extension(&self) -> bool {
        self.b()[0] & 0x10 != 0
    }
    /// CC: number of CSRCs.
    pub fn csrc_count(&self) -> u8 {
        self.b()[0] & 0x0f
    }
    /// M bit.
    #[inline]
    pub fn marker(&self) -> bool {
        self.b()[1] & 0x80 != 0
    }
    /// PT.
    #[inline]
    pub fn payload_type(&self) -> u8 {
        self.b()[1] & 0x7f
    }
    /// Sequence number.
    #[inline]
    pub fn sequence_number(&self) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[2], b[3]])
    }
    /// Timestamp.
    #[inline]
    pub fn timestamp(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    /// SSRC.
    #[inline]
    pub fn ssrc(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }
    /// CSRC `i`, if `i < csrc_count()`.
    pub fn csrc(&self, i: usize) -> Option<u32> {
        if i >= usize::from(self.csrc_count()) {
            return None;
        }
        let o = RTP_FIXED_HEADER_LEN + 4 * i;
        let b = self.b();
        Some(u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
    }
    /// Header extension `(profile, length_in_words)` when X is set.
    pub fn extension_header(&self) -> Option<(u16, u16)> {
        if !self.extension() {
            return None;
        }
        let o = RTP_FIXED_HEADER_LEN + 4 * usize::from(self.csrc_count());
        let b = self.b();
        Some((
            u16::from_be_bytes([b[o], b[o + 1]]),
            u16::from_be_bytes([b[o + 2], b[o + 3]]),
        ))
    }
    /// Octets before the payload: fixed header + CSRCs + extension.
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// Number of padding octets (0 when P is clear).
    pub fn padding_len(&self) -> usize {
        self.b().len() - self.payload_end
    }
    /// The payload, without padding.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len..self.payload_end]
    }
    /// Whole packet length in octets.
    pub fn len(&self) -> usize {
        self.b().len()
    }
    /// Never true for a validated packet; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.b().is_empty()
    }
    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    #[inline]
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Set or clear the M bit.
    #[inline]
    pub fn set_marker(&mut self, m: bool) {
        let b = self.bm();
        b[1] = (b[1] & 0x7f) | if m { 0x80 } else { 0 };
    }
    /// Set PT (only the low 7 bits of `pt` are used).
    #[inline]
    pub fn set_payload_type(&mut self, pt: u8) {
        let b = self.bm();
        b[1] = (b[1] & 0x80) | (pt & 0x7f);
    }
    /// Set the sequence number.
    #[inline]
    pub fn set_sequence_number(&mut self, seq: u16) {
        self.bm()[2..4].copy_from_slice(&seq.to_be_bytes());
    }
    /// Set the timestamp.
    #[inline]
    pub fn set_timestamp(&mut self, ts: u32) {
        self.bm()[4..8].copy_from_slice(&ts.to_be_bytes());
    }
    /// Set the SSRC.
    #[inline]
    pub fn set_ssrc(&mut self, ssrc: u32) {
        self.bm()[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }
    /// Mutable payload, without padding.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (s, e) = (self.header_len, self.payload_end);
        &mut self.bm()[s..e]
    }
}

/// RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1).
pub mod rtcp_type {
    /// Sender report.
    pub const SR: u8 = 200;
    /// Receiver report.
    pub const RR: u8 = 201;
    /// Source description.
    pub const SDES: u8 = 202;
    /// Goodbye.
    pub const BYE: u8 = 203;
    /// Application-defined.
    pub const APP: u8 = 204;
    /// Transport-layer feedback (RFC 4585).
    pub const RTPFB: u8 = 205;
    /// Payload-specific feedback (RFC 4585).
    pub const PSFB: u8 = 206;
}

/// Header of the first packet in an RTCP (compound) datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpHeader {
    /// Packet type (200 = SR, 201 = RR, …).
    pub packet_type: u8,
    /// RC / SC / FMT: the five low bits of the first octet.
    pub count: u8,
    /// Octets of this packet including its header ((length + 1) × 4, RFC 3550 §6.4.1).
    pub len: usize,
    /// Sender SSRC (SR, RR, APP, RTPFB, PSFB) or first chunk SSRC (SDES, BYE).
    pub ssrc: u32,
}

/// Parse the first RTCP packet header of a datagram (RFC 3550 §6.4.1).
pub fn rtcp_header(buf: &[u8]) -> Result<RtcpHeader, PacketError> {
    if buf.len() < 8 {
        return Err(PacketError::TooShort { len: buf.len() });
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(PacketError::BadVersion(version));
    }
    let packet_type = buf[1];
    if !(192..=223).contains(&packet_type) {
        return Err(PacketError::NotRtcp(packet_type));
    }
    let len = (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4;
    if len > buf.len() {
        return Err(PacketError::RtcpLengthBeyondBuffer);
    }
    Ok(RtcpHeader {
        packet_type,
        count: buf[0] & 0x1f,
        len,
        ssrc: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
    })
}

/// How to translate an RTCP datagram that crosses the relay (RFC 3550 §7.2: a translator
/// that changes SSRCs, sequence numbers and timestamps must change RTCP consistently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpRewrite {
    /// New sender SSRC for every packet (the relay's outgoing SSRC of this direction).
    pub sender_ssrc: u32,
    /// `(original sender SSRC, timestamp offset)`: add the offset to an SR's RTP timestamp
    /// when the SR's sender is that SSRC (the input source the RTP offsets belong to).
    pub sr_timestamp: Option<(u32, u32)>,
    /// Report blocks about the relay's *other* outgoing stream: `(its outgoing SSRC, the
    /// original input SSRC, its sequence offset)` — the block's SSRC is mapped back to the
    /// original and the extended highest sequence number's low 16 bits shifted back.
    pub report_blocks: Option<(u32, u32, u16)>,
}

impl RtcpRewrite {
    /// Only the sender SSRC.
    pub fn sender_only(sender_ssrc: u32) -> Self {
        RtcpRewrite {
            sender_ssrc,
            sr_timestamp: None,
            report_blocks: None,
        }
    }
}

/// Rewrite the sender SSRC in place in every packet of a compound RTCP datagram, so the
/// receiver attributes the reports to the relay's outgoing stream (RFC 3550 §6.4.1, §7.2).
/// Equivalent to [`rewrite_rtcp`] with [`RtcpRewrite::sender_only`].
pub fn rewrite_rtcp_sender_ssrc(buf: &mut [u8], ssrc: u32) -> Result<usize, PacketError> {
    rewrite_rtcp(buf, &RtcpRewrite::sender_only(ssrc))
}

/// Translate a compound RTCP datagram in place.
///
/// Rewritten: SR/RR/APP/RTPFB/PSFB sender SSRC; SDES first chunk and BYE first SSRC when the
/// count is non-zero; optionally the SR RTP timestamp and SR/RR report blocks (see
/// [`RtcpRewrite`]). Other report blocks and feedback media-source SSRCs are left alone. The
/// first packet must be valid; a later malformed packet stops the walk (what was rewritten
/// stays). Returns how many packets had their sender SSRC rewritten.
pub fn rewrite_rtcp(buf: &mut [u8], rw: &RtcpRewrite) -> Result<usize, PacketError> {
    let first = rtcp_header(buf)?;
    if first.len < 8 {
        return Err(PacketError::TooShort { len: first.len });
    }
    let mut off = 0usize;
    let mut rewritten = 0usize;
    // Bounded: each iteration advances by at least 8 octets.
    while let Some(rest) = buf.get_mut(off..) {
        let Ok(h) = rtcp_header(rest) else { break };
        if h.len < 8 {
            break; // a length-0 packet has no SSRC word of its own
        }
        let pkt = &mut rest[..h.len];
        let has_ssrc = match h.packet_type {
            rtcp_type::SDES | rtcp_type::BYE => h.count > 0,
            _ => true,
        };
        if has_ssrc {
            pkt[4..8].copy_from_slice(&rw.sender_ssrc.to_be_bytes());
            rewritten += 1;
        }
        let blocks_at = match h.packet_type {
            rtcp_type::SR => 28, // header + SSRC + 20 octets of sender info (§6.4.1)
            rtcp_type::RR => 8,
            _ => 0,
        };
        if h.packet_type == rtcp_type::SR && pkt.len() >= 28 {
            if let Some((orig, ts_offset)) = rw.sr_timestamp {
                if h.ssrc == orig {
                    let ts = u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]);
                    pkt[16..20].copy_from_slice(&ts.wrapping_add(ts_offset).to_be_bytes());
                }
            }
        }
        if let (true, Some((out_ssrc, in_ssrc, seq_offset))) = (blocks_at > 0, rw.report_blocks) {
            for k in 0..usize::from(h.count) {
                let o = blocks_at + 24 * k;
                let Some(block) = pkt.get_mut(o..o + 24) else {
                    break;
                };
                if block[0..4] != out_ssrc.to_be_bytes() {
                    continue;
                }
                block[0..4].copy_from_slice(&in_ssrc.to_be_bytes());
                // §6.4.1: extended highest sequence number = cycles (high 16) | seq (low 16).
                let low = u16::from_be_bytes([block[10], block[11]]).wrapping_sub(seq_offset);
                block[10..12].copy_from_slice(&low.to_be_bytes());
            }
        }
        off += h.len;
    }
    Ok(rewritten)
}

/// An RFC 4733 §2.3 telephone-event payload (DTMF), read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–9, 10 = `*`, 11 = `#`, 12–15 = A–D, …).
    pub event: u8,
    /// E bit: this packet ends the event.
    pub end: bool,
    /// Volume in −dBm0 (0..=63).
    pub volume: u8,
    /// Duration in timestamp units since the event's RTP timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parse the first 4 octets of a telephone-event payload (RFC 4733 §2.3).
    pub fn parse(payload: &[u8]) -> Result<Self, PacketError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3f,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(PacketError::TooShort { len: payload.len() }),
        }
    }

    /// The event as a DTMF character, if it is one of the 16 DTMF events (RFC 4733 §3.2).
    pub fn dtmf_char(&self) -> Option<char> {
        const DTMF: &[u8; 16] = b"0123456789*#ABCD";
        DTMF.get(usize::from(self.event)).map(|&c| char::from(c))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Build an RTP packet by hand: header + CSRCs + optional extension + payload + padding.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build_rtp(
        marker: bool,
        pt: u8,
        seq: u16,
        ts: u32,
        ssrc: u32,
        csrcs: &[u32],
        ext: Option<(u16, &[u32])>,
        payload: &[u8],
        pad: u8,
    ) -> Vec<u8> {
        let mut v = Vec::new();
        let b0 = 0x80
            | if pad > 0 { 0x20 } else { 0 }
            | if ext.is_some() { 0x10 } else { 0 }
            | (csrcs.len() as u8 & 0x0f);
        v.push(b0);
        v.push(if marker { 0x80 } else { 0 } | (pt & 0x7f));
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&ssrc.to_be_bytes());
        for c in csrcs {
            v.extend_from_slice(&c.to_be_bytes());
        }
        if let Some((profile, words)) = ext {
            v.extend_from_slice(&profile.to_be_bytes());
            v.extend_from_slice(&(words.len() as u16).to_be_bytes());
            for w in words {
                v.extend_from_slice(&w.to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        if pad > 0 {
            v.extend(std::iter::repeat_n(0u8, usize::from(pad) - 1));
            v.push(pad);
        }
        v
    }

    pub(crate) fn simple_rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        build_rtp(false, pt, seq, ts, ssrc, &[], None, &[0xffu8; 160], 0)
    }

    #[test]
    fn parse_plain_header() {
        let buf = simple_rtp(0, 1234, 0xdead_beef, 0x0102_0304);
        let p = RtpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.padding() && !p.extension() && !p.marker());
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.sequence_number(), 1234);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), 0x0102_0304);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload().len(), 160);
        assert_eq!(p.len(), 172);
    }

    #[test]
    fn parse_csrcs_extension_padding() {
        let buf = build_rtp(
            true,
            101,
            7,
            8,
            9,
            &[0xaaaa_aaaa, 0xbbbb_bbbb],
            Some((0xbede, &[0x1122_3344, 0x5566_7788])),
            &[1, 2, 3, 4],
            4,
        );
        let p = RtpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.marker() && p.padding() && p.extension());
        assert_eq!(p.payload_type(), 101);
        assert_eq!(p.csrc_count(), 2);
        assert_eq!(p.csrc(0), Some(0xaaaa_aaaa));
        assert_eq!(p.csrc(1), Some(0xbbbb_bbbb));
        assert_eq!(p.csrc(2), None);
        assert_eq!(p.extension_header(), Some((0xbede, 2)));
        assert_eq!(p.header_len(), 12 + 8 + 4 + 8);
        assert_eq!(p.padding_len(), 4);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn setters_rewrite_in_place_and_keep_other_bits() {
        let mut buf = build_rtp(false, 0, 1, 2, 3, &[0x55], Some((1, &[9])), &[7; 10], 2);
        let orig = buf.clone();
        {
            let mut p = RtpPacket::new_checked(&mut buf[..]).unwrap();
            p.set_marker(true);
            p.set_payload_type(96);
            p.set_sequence_number(0xfffe);
            p.set_timestamp(0x8000_0001);
            p.set_ssrc(0xcafe_f00d);
            assert!(p.marker());
            assert_eq!(p.payload_type(), 96);
            p.set_payload_type(0);
            assert!(p.marker(), "PT setter keeps M");
            p.set_marker(false);
            assert_eq!(p.payload_type(), 0, "M setter keeps PT");
            p.set_payload_type(96);
            p.set_marker(true);
        }
        let p = RtpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.sequence_number(), 0xfffe);
        assert_eq!(p.timestamp(), 0x8000_0001);
        assert_eq!(p.ssrc(), 0xcafe_f00d);
        assert_eq!(p.csrc(0), Some(0x55));
        assert_eq!(buf[0], orig[0], "V/P/X/CC untouched");
        assert_eq!(
            buf[12..],
            orig[12..],
            "CSRCs, extension, payload, padding untouched"
        );
    }

    #[test]
    fn malformed_rtp_is_typed() {
        assert_eq!(
            RtpPacket::new_checked(&[0x80u8; 11][..]).unwrap_err(),
            PacketError::TooShort { len: 11 }
        );
        let mut v1 = simple_rtp(0, 1, 1, 1);
        v1[0] = 0x40;
        assert_eq!(
            RtpPacket::new_checked(&v1[..]).unwrap_err(),
            PacketError::BadVersion(1)
        );
        let mut cc = simple_rtp(0, 1, 1, 1);
        cc.truncate(20);
        cc[0] = 0x80 | 3; // 3 CSRCs need 24 bytes
        assert_eq!(
            RtpPacket::new_checked(&cc[..]).unwrap_err(),
            PacketError::CsrcBeyondLength
        );
        let mut ext = build_rtp(false, 0, 1, 1, 1, &[], Some((1, &[1])), &[], 0);
        ext[15] = 5; // 5 words claimed, 1 present
        assert_eq!(
            RtpPacket::new_checked(&ext[..]).unwrap_err(),
            PacketError::ExtensionBeyondLength
        );
        let mut ext_hdr = simple_rtp(0, 1, 1, 1);
        ext_hdr.truncate(14);
        ext_hdr[0] |= 0x10;
        assert_eq!(
            RtpPacket::new_checked(&ext_hdr[..]).unwrap_err(),
            PacketError::ExtensionBeyondLength
        );
        let mut pad = simple_rtp(0, 1, 1, 1);
        pad[0] |= 0x20;
        *pad.last_mut().unwrap() = 200; // more than the 160-byte payload
        assert_eq!(
            RtpPacket::new_checked(&pad[..]).unwrap_err(),
            PacketError::BadPadding
        );
        *pad.last_mut().unwrap() = 0;
        assert_eq!(
            RtpPacket::new_checked(&pad[..]).unwrap_err(),
            PacketError::BadPadding
        );
    }

    #[test]
    fn demux_first_byte_and_rtcp_range() {
        assert_eq!(classify(&[]), PacketClass::Unknown);
        assert_eq!(classify(&[0x00, 0x01]), PacketClass::Stun);
        assert_eq!(classify(&[22, 0xfe]), PacketClass::Dtls);
        assert_eq!(classify(&[17]), PacketClass::Zrtp);
        assert_eq!(classify(&[0x40]), PacketClass::TurnChannel);
        assert_eq!(classify(&[0x80, 0]), PacketClass::Rtp);
        assert_eq!(classify(&[0x80, 0xe5]), PacketClass::Rtp); // M + PT 101
        assert_eq!(classify(&[0x80, 200]), PacketClass::Rtcp);
        assert_eq!(classify(&[0x81, 201]), PacketClass::Rtcp);
        assert_eq!(classify(&[0x80, 223]), PacketClass::Rtcp);
        assert_eq!(classify(&[0x80, 224]), PacketClass::Rtp);
        assert_eq!(classify(&[0x80]), PacketClass::Rtp);
        assert_eq!(classify(&[200]), PacketClass::Unknown);
    }

    /// SR (1 report block) + SDES (1 chunk) compound packet.
    pub(crate) fn build_sr_sdes(sender: u32, reportee: u32) -> Vec<u8> {
        let mut v = vec![0x81, 200, 0, 12];
        v.extend_from_slice(&sender.to_be_bytes());
        v.extend_from_slice(&[0u8; 20]); // NTP, RTP ts, packet + octet counts
        v.extend_from_slice(&reportee.to_be_bytes());
        v.extend_from_slice(&[0u8; 20]); // report block body
        v.extend_from_slice(&[0x81, 202, 0, 2]);
        v.extend_from_slice(&sender.to_be_bytes());
        v.extend_from_slice(&[1, 1, b'x', 0]); // CNAME "x", end
        v
    }

    #[test]
    fn rtcp_compound_sender_ssrc_rewrite() {
        let mut sr = build_sr_sdes(0x1111_1111, 0x2222_2222);
        let h = rtcp_header(&sr).unwrap();
        assert_eq!(
            (h.packet_type, h.count, h.len, h.ssrc),
            (200, 1, 52, 0x1111_1111)
        );
        assert_eq!(rewrite_rtcp_sender_ssrc(&mut sr, 0xabcd_ef01).unwrap(), 2);
        assert_eq!(&sr[4..8], &0xabcd_ef01u32.to_be_bytes());
        assert_eq!(
            &sr[28..32],
            &0x2222_2222u32.to_be_bytes(),
            "report block kept"
        );
        assert_eq!(&sr[56..60], &0xabcd_ef01u32.to_be_bytes(), "SDES chunk");

        let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 7];
        assert_eq!(rewrite_rtcp_sender_ssrc(&mut rr, 9).unwrap(), 1);
        assert_eq!(rtcp_header(&rr).unwrap().ssrc, 9);

        let mut long = vec![0x80, 201, 0, 9, 0, 0, 0, 7];
        assert_eq!(
            rewrite_rtcp_sender_ssrc(&mut long, 9).unwrap_err(),
            PacketError::RtcpLengthBeyondBuffer
        );
        let mut rtp_pt = vec![0x80, 96, 0, 1, 0, 0, 0, 7];
        assert_eq!(
            rewrite_rtcp_sender_ssrc(&mut rtp_pt, 9).unwrap_err(),
            PacketError::NotRtcp(96)
        );
        // A truncated trailing packet stops the walk but keeps the first rewrite.
        let mut trunc = build_sr_sdes(1, 2);
        trunc.truncate(58);
        assert_eq!(rewrite_rtcp_sender_ssrc(&mut trunc, 5).unwrap(), 1);
        // A length-0 packet (4 octets) must not have the next packet's words rewritten.
        let mut zero = vec![0x80, 201, 0, 0, 0x80, 201, 0, 1, 0, 0, 0, 7];
        assert_eq!(
            rewrite_rtcp_sender_ssrc(&mut zero, 9).unwrap_err(),
            PacketError::TooShort { len: 4 }
        );
        assert_eq!(&zero[4..8], &[0x80, 201, 0, 1]);
    }

    #[test]
    fn rtcp_translates_sr_timestamp_and_report_blocks() {
        let mut sr = build_sr_sdes(0x1111, 0xbbbb);
        sr[16..20].copy_from_slice(&1000u32.to_be_bytes()); // SR RTP timestamp
        sr[36..40].copy_from_slice(&0x0002_0005u32.to_be_bytes()); // ext highest seq
        let rw = RtcpRewrite {
            sender_ssrc: 0xaaaa,
            sr_timestamp: Some((0x1111, 500)),
            report_blocks: Some((0xbbbb, 0xcccc, 10)),
        };
        assert_eq!(rewrite_rtcp(&mut sr, &rw).unwrap(), 2);
        assert_eq!(&sr[4..8], &0xaaaau32.to_be_bytes());
        assert_eq!(&sr[16..20], &1500u32.to_be_bytes());
        assert_eq!(&sr[28..32], &0xccccu32.to_be_bytes());
        assert_eq!(
            &sr[36..40],
            &0x0002_fffbu32.to_be_bytes(),
            "low 16 bits: 5 - 10"
        );
        // Another sender's SR timestamp and other reportees are not touched.
        let mut other = build_sr_sdes(0x2222, 0xdddd);
        rewrite_rtcp(&mut other, &rw).unwrap();
        assert_eq!(&other[16..20], &[0, 0, 0, 0]);
        assert_eq!(&other[28..32], &0xddddu32.to_be_bytes());
    }

    #[test]
    fn garbage_never_panics() {
        // Seeded xorshift bytes of every short length: the parsers answer, never panic, and
        // a packet they accept never reads outside itself.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..64 {
            for _ in 0..64 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                if let Ok(p) = RtpPacket::new_checked(&bytes[..]) {
                    assert!(p.header_len() + p.payload().len() <= len);
                    let _ = TelephoneEvent::parse(p.payload());
                }
                let _ = TelephoneEvent::parse(&bytes);
            }
        }
    }

    #[test]
    fn telephone_event_view() {
        // '#' (11), end bit, volume 10, duration 800.
        let e = TelephoneEvent::parse(&[11, 0x80 | 10, 0x03, 0x20]).unwrap();
        assert_eq!(
            e,
            TelephoneEvent {
                event: 11,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(e.dtmf_char(), Some('#'));
        let start = TelephoneEvent::parse(&[5, 0x40 | 7, 0, 160]).unwrap();
        assert!(!start.end, "the R bit is not the E bit");
        assert_eq!(start.volume, 7);
        assert_eq!(start.dtmf_char(), Some('5'));
        assert_eq!(
            TelephoneEvent::parse(&[32, 0, 0, 0]).unwrap().dtmf_char(),
            None
        );
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]).unwrap_err(),
            PacketError::TooShort { len: 3 }
        );
    }
}
