//! Audio between the RTP leg and WebSocket AI providers: G.711 μ-law / A-law ↔ linear
//! PCM16 (ITU-T G.711), and a [`Pacer`] that turns a provider's bursts of audio into 20 ms
//! frames at wall-clock pace toward the caller.
//!
//! Does: exact G.711 coding (decode then encode is the identity on every code but μ-law's
//! negative zero); pacing by injected `now` — a burst is queued and released one frame per
//! frame time, a late poll catches up without sending a burst to the caller, `clear` drops
//! what is queued (barge-in) and says how much had been played.
//!
//! Never: reads the clock, allocates per frame (the queue grows once to the largest burst),
//! or invents audio except the silence padding the last partial frame of a burst.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

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

/// Paces a provider's audio toward the caller: bursts in, one 20 ms frame per frame time
/// out. Sans-IO: the shell calls [`Pacer::push`] with what arrived and
/// [`Pacer::poll`] at [`Pacer::next_deadline`].
#[derive(Debug, Clone)]
pub struct Pacer {
    law: G711,
    queue: VecDeque<u8>,
    /// When the next frame is due; `None` while idle (nothing queued).
    next: Option<Instant>,
    /// Bytes released since the last [`Pacer::mark_item`] (what the caller has heard of the
    /// current response).
    played: u64,
}

/// How far behind the pacer may fall before it stops catching up and restarts its clock
/// (a stalled shell must not make the caller hear a burst).
const MAX_LAG: Duration = Duration::from_millis(60);

impl Pacer {
    pub fn new(law: G711) -> Pacer {
        Pacer {
            law,
            queue: VecDeque::new(),
            next: None,
            played: 0,
        }
    }

    /// Queues audio received from the provider. Starts the clock if idle: the first frame
    /// is due at once.
    pub fn push(&mut self, audio: &[u8], now: Instant) {
        if audio.is_empty() {
            return;
        }
        self.queue.extend(audio);
        self.next.get_or_insert(now);
    }

    /// When [`Pacer::poll`] next has a frame, if anything is queued.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Bytes queued and not yet released.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The next frame into `out` (at least [`FRAME_SAMPLES`] bytes) when one is due; the
    /// last partial frame of a burst is padded with silence. Returns the bytes written.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let due = self.next?;
        if now < due || out.len() < FRAME_SAMPLES {
            return None;
        }
        let n = self.queue.len().min(FRAME_SAMPLES);
        for (o, b) in out.iter_mut().zip(self.queue.drain(..n)) {
            *o = b;
        }
        out[n..FRAME_SAMPLES].fill(self.law.silence());
        self.played += n as u64;
        self.next = if self.queue.is_empty() {
            None
        } else if now.duration_since(due) > MAX_LAG {
            Some(now + FRAME)
        } else {
            Some(due + FRAME)
        };
        Some(FRAME_SAMPLES)
    }

    /// The next frame into `out` (at least [`FRAME_SAMPLES`] bytes) regardless of the
    /// pacer's own clock, for a caller that runs a continuous frame clock of its own (the
    /// WebSocket session's RTP clock). Returns how many of the frame's bytes are queued audio:
    /// 0 when nothing was queued (the frame is silence), less than [`FRAME_SAMPLES`] for the
    /// silence-padded last frame of a burst. Writes nothing when `out` is too short.
    pub fn pull_frame(&mut self, out: &mut [u8]) -> usize {
        if out.len() < FRAME_SAMPLES {
            return 0;
        }
        let n = self.queue.len().min(FRAME_SAMPLES);
        for (o, b) in out.iter_mut().zip(self.queue.drain(..n)) {
            *o = b;
        }
        out[n..FRAME_SAMPLES].fill(self.law.silence());
        self.played += n as u64;
        if self.queue.is_empty() {
            self.next = None;
        }
        n
    }

    /// Drops everything queued (barge-in: the caller started talking). Returns the
    /// milliseconds of the current response the caller has heard, for the provider's
    /// truncate message.
    pub fn clear(&mut self) -> u64 {
        self.queue.clear();
        self.next = None;
        self.played_ms()
    }

    /// Milliseconds released since the last [`Pacer::mark_item`].
    pub fn played_ms(&self) -> u64 {
        self.played / 8
    }

    /// A new response starts: restart the played-audio count.
    pub fn mark_item(&mut self) {
        self.played = 0;
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

    #[test]
    fn a_burst_leaves_one_frame_per_20_ms() {
        let t0 = Instant::now();
        let mut p = Pacer::new(G711::Ulaw);
        p.push(&[1u8; 3 * FRAME_SAMPLES + 40], t0);
        let mut out = [0u8; FRAME_SAMPLES];
        assert_eq!(p.poll(t0, &mut out), Some(FRAME_SAMPLES));
        assert_eq!(out, [1u8; FRAME_SAMPLES]);
        assert_eq!(
            p.poll(t0 + Duration::from_millis(19), &mut out),
            None,
            "too early"
        );
        assert_eq!(p.next_deadline(), Some(t0 + FRAME));
        for k in 1..3 {
            assert_eq!(p.poll(t0 + FRAME * k, &mut out), Some(FRAME_SAMPLES));
        }
        // The last 40 bytes, padded with μ-law silence.
        assert_eq!(p.poll(t0 + FRAME * 3, &mut out), Some(FRAME_SAMPLES));
        assert_eq!(&out[..40], &[1u8; 40]);
        assert!(out[40..].iter().all(|&b| b == 0xff));
        assert_eq!(p.next_deadline(), None, "idle once drained");
        assert_eq!(p.played_ms(), (3 * 160 + 40) as u64 / 8);
    }

    #[test]
    fn a_late_poll_keeps_the_schedule_but_a_stall_restarts_it() {
        let t0 = Instant::now();
        let mut p = Pacer::new(G711::Alaw);
        p.push(&[0u8; 10 * FRAME_SAMPLES], t0);
        let mut out = [0u8; FRAME_SAMPLES];
        p.poll(t0 + Duration::from_millis(5), &mut out).unwrap();
        // 5 ms late: the next frame is still due on the 20 ms grid.
        assert_eq!(p.next_deadline(), Some(t0 + FRAME));
        // 200 ms stall: one frame now, then the clock restarts from now (no burst).
        let late = t0 + Duration::from_millis(220);
        p.poll(late, &mut out).unwrap();
        assert_eq!(p.next_deadline(), Some(late + FRAME));
        assert_eq!(p.poll(late, &mut out), None);
    }

    #[test]
    fn pull_frame_ignores_the_clock_and_pads_with_silence() {
        let t0 = Instant::now();
        let mut p = Pacer::new(G711::Alaw);
        let mut out = [0u8; FRAME_SAMPLES];
        assert_eq!(p.pull_frame(&mut out), 0, "nothing queued");
        assert!(out.iter().all(|&b| b == 0xd5), "A-law silence");
        p.push(&[3u8; FRAME_SAMPLES + 10], t0);
        assert_eq!(p.pull_frame(&mut out), FRAME_SAMPLES);
        assert_eq!(p.pull_frame(&mut out), 10);
        assert_eq!(&out[..10], &[3u8; 10]);
        assert!(out[10..].iter().all(|&b| b == 0xd5));
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.played_ms(), (FRAME_SAMPLES as u64 + 10) / 8);
        let mut short = [0u8; 10];
        p.push(&[1u8; 5], t0);
        assert_eq!(p.pull_frame(&mut short), 0, "too short: nothing taken");
        assert_eq!(p.queued(), 5);
    }

    #[test]
    fn clear_drops_the_queue_and_reports_what_was_heard() {
        let t0 = Instant::now();
        let mut p = Pacer::new(G711::Ulaw);
        p.mark_item();
        p.push(&[9u8; 50 * FRAME_SAMPLES], t0);
        let mut out = [0u8; FRAME_SAMPLES];
        for k in 0..5 {
            p.poll(t0 + FRAME * k, &mut out).unwrap();
        }
        assert_eq!(p.clear(), 100, "5 frames = 100 ms heard");
        assert_eq!(p.queued(), 0);
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.poll(t0 + FRAME * 6, &mut out), None);
        p.mark_item();
        assert_eq!(p.played_ms(), 0);
    }
}
