//! Audio between the RTP leg and WebSocket AI providers: a [`Pacer`] that turns a
//! provider's bursts of audio into 20 ms frames at wall-clock pace toward the caller (the
//! G.711 coding itself is `media::codec`).
//!
//! Does: pacing by injected `now` — a burst is queued and released one frame per
//! frame time, a late poll catches up without sending a burst to the caller, `clear` drops
//! what is queued (barge-in) and says how much had been played.
//!
//! Never: reads the clock, allocates per frame (the queue grows once to the largest burst),
//! or invents audio except the silence padding the last partial frame of a burst.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::codec::{FRAME, FRAME_SAMPLES, G711};

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
