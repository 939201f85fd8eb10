//! G.711 μ-law / A-law ↔ linear PCM16 (ITU-T G.711), and the 20 ms frame every leg here
//! uses.
//!
//! Does: exact G.711 coding (decode then encode is the identity on every code but μ-law's
//! negative zero) and in-place transcoding between the two laws. Used by the relay (comfort
//! noise, transcoding toward a leg of the other law) and the AI leg (PCM for providers).
//!
//! Never: allocates, or knows about RTP, sockets or providers.
use std::time::Duration;

/// One frame: 20 ms, the ptime every carrier and bot here uses.
pub const FRAME: Duration = Duration::from_millis(20);
/// Samples (G.711 bytes) in a frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// G.711 μ-law encode of one linear PCM16 sample.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(ULAW_CLIP) + ULAW_BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// G.711 μ-law decode of one byte to linear PCM16.
pub fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let exponent = i32::from((u >> 4) & 7);
    let mantissa = i32::from(u & 0x0f);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Upper end of each A-law segment, in 13-bit magnitude.
const ALAW_SEG_END: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

/// G.711 A-law encode of one linear PCM16 sample.
pub fn alaw_encode(sample: i16) -> u8 {
    let mut p = i32::from(sample) >> 3;
    let mask = if p >= 0 {
        0xd5
    } else {
        p = -p - 1;
        0x55
    };
    let Some(seg) = ALAW_SEG_END.iter().position(|&end| p <= end) else {
        return 0x7f ^ mask;
    };
    let shift = if seg < 2 { 1 } else { seg };
    let aval = ((seg as i32) << 4) | ((p >> shift) & 0x0f);
    (aval as u8) ^ mask
}

/// G.711 A-law decode of one byte to linear PCM16.
pub fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let seg = (a & 0x70) >> 4;
    let mut t = i32::from(a & 0x0f) << 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

/// A G.711 law: how a provider's or a leg's 8 kHz audio is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum G711 {
    /// PCMU, RTP payload type 0.
    Ulaw,
    /// PCMA, RTP payload type 8.
    Alaw,
}

impl G711 {
    /// The code of digital silence.
    pub fn silence(self) -> u8 {
        match self {
            G711::Ulaw => 0xff,
            G711::Alaw => 0xd5,
        }
    }

    pub fn encode(self, sample: i16) -> u8 {
        match self {
            G711::Ulaw => ulaw_encode(sample),
            G711::Alaw => alaw_encode(sample),
        }
    }

    pub fn decode(self, code: u8) -> i16 {
        match self {
            G711::Ulaw => ulaw_decode(code),
            G711::Alaw => alaw_decode(code),
        }
    }

    /// Re-codes `buf` in place from `self` to `to` (μ-law ↔ A-law through linear).
    pub fn transcode(self, to: G711, buf: &mut [u8]) {
        if self != to {
            for b in buf {
                *b = to.encode(self.decode(*b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_round_trips_every_code_but_negative_zero() {
        for c in 0..=255u8 {
            let back = ulaw_encode(ulaw_decode(c));
            if c == 0x7f {
                assert_eq!(back, 0xff, "negative zero encodes as zero");
            } else {
                assert_eq!(back, c, "code {c:#04x}");
            }
        }
    }

    #[test]
    fn alaw_round_trips_every_code() {
        for c in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(c)), c, "code {c:#04x}");
        }
    }

    #[test]
    fn known_g711_values() {
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0xaa), 32256);
        assert_eq!(alaw_decode(0x2a), -32256);
        assert_eq!(G711::Ulaw.decode(G711::Ulaw.silence()), 0);
        assert!(G711::Alaw.decode(G711::Alaw.silence()).abs() <= 8);
    }

    #[test]
    fn encoding_is_monotonic_and_close() {
        // Decoded values rise with the input, and the error stays within one quantum.
        for law in [G711::Ulaw, G711::Alaw] {
            let mut last = i16::MIN;
            for s in (i16::MIN..=i16::MAX).step_by(7) {
                let d = law.decode(law.encode(s));
                assert!(d >= last, "{law:?} not monotonic at {s}");
                last = d;
                let err = (i32::from(d) - i32::from(s)).abs();
                let quantum = (i32::from(s).abs() / 16).max(16);
                assert!(err <= quantum, "{law:?}: {s} -> {d}");
            }
        }
    }

    #[test]
    fn transcode_maps_ulaw_to_alaw_through_linear() {
        let mut b = [0xff, 0x80, 0x00, 0x7f];
        G711::Ulaw.transcode(G711::Alaw, &mut b);
        assert_eq!(b[0], alaw_encode(0));
        assert_eq!(b[1], alaw_encode(32124));
        assert_eq!(b[2], alaw_encode(-32124));
        let mut same = [1u8, 2, 3];
        G711::Alaw.transcode(G711::Alaw, &mut same);
        assert_eq!(same, [1, 2, 3]);
    }
}
