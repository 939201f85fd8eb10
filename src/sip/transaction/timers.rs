//! Transaction timer values (RFC 3261 §17 and Table 4, RFC 6026 §8) and a small fixed table of
//! armed deadlines that each state machine keeps.
//!
//! This module only does arithmetic on `Duration`s and `Instant`s handed to it. It never reads
//! a clock, never sleeps and never schedules anything itself: the caller asks
//! [`Timers::next_timeout`] when to come back and feeds that instant in.

use std::time::{Duration, Instant};

use super::Reliability;

/// T1, T2 and T4 of RFC 3261 §17.1.1.1 / §17.1.2.2 (Table 4). Every other timer derives from
/// these, so changing T1 rescales A, B, E, F, G, H, J, L and M.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Round-trip time estimate; initial retransmit interval (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// The RFC 3261 lower bound for Timer D on unreliable transports (§17.1.1.2: "at least 32
/// seconds"), independent of T1.
const TIMER_D_MIN_UNRELIABLE: Duration = Duration::from_secs(32);

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J (unreliable), L and M all use it.
    pub fn t1_x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// First interval of every retransmit timer: Timer A (§17.1.1.2), E (§17.1.2.2), G
    /// (§17.2.1) and the 2xx retransmission (§13.3.1.4) all start at T1.
    pub fn retransmit_initial(&self) -> Duration {
        floor(self.t1)
    }

    /// Checks the relations RFC 3261 assumes: T1 > 0, T2 >= T1, T4 > 0. The machines stay
    /// well-behaved (no busy loop) even with an unchecked config, since retransmit intervals
    /// are floored at 1 ms, but a config file should be rejected with this instead.
    pub fn validate(&self) -> Result<(), TimerConfigError> {
        if self.t1.is_zero() {
            return Err(TimerConfigError::ZeroT1);
        }
        if self.t2 < self.t1 {
            return Err(TimerConfigError::T2BelowT1 {
                t1: self.t1,
                t2: self.t2,
            });
        }
        if self.t4.is_zero() {
            return Err(TimerConfigError::ZeroT4);
        }
        Ok(())
    }

    /// Timer B (§17.1.1.2): INVITE client transaction timeout, 64*T1.
    pub fn timer_b(&self) -> Duration {
        self.t1_x64()
    }

    /// Timer D (§17.1.1.2): wait for response retransmits in Completed. At least 32 s on
    /// unreliable transports (we use max(32 s, 64*T1) so a large T1 still covers the server's
    /// Timer H window), 0 on reliable ones.
    pub fn timer_d(&self, reliability: Reliability) -> Duration {
        match reliability {
            Reliability::Unreliable => self.t1_x64().max(TIMER_D_MIN_UNRELIABLE),
            Reliability::Reliable => Duration::ZERO,
        }
    }

    /// Timer F (§17.1.2.2): non-INVITE client transaction timeout, 64*T1.
    pub fn timer_f(&self) -> Duration {
        self.t1_x64()
    }

    /// Timer H (§17.2.1): wait time for an ACK to a non-2xx final, 64*T1.
    pub fn timer_h(&self) -> Duration {
        self.t1_x64()
    }

    /// Timer I (§17.2.1): absorb ACK retransmits in Confirmed. T4 unreliable, 0 reliable.
    pub fn timer_i(&self, reliability: Reliability) -> Duration {
        match reliability {
            Reliability::Unreliable => self.t4,
            Reliability::Reliable => Duration::ZERO,
        }
    }

    /// Timer J (§17.2.2): absorb request retransmits in Completed. 64*T1 unreliable, 0 reliable.
    pub fn timer_j(&self, reliability: Reliability) -> Duration {
        match reliability {
            Reliability::Unreliable => self.t1_x64(),
            Reliability::Reliable => Duration::ZERO,
        }
    }

    /// Timer K (§17.1.2.2): absorb response retransmits in Completed. T4 unreliable, 0 reliable.
    pub fn timer_k(&self, reliability: Reliability) -> Duration {
        match reliability {
            Reliability::Unreliable => self.t4,
            Reliability::Reliable => Duration::ZERO,
        }
    }

    /// Timer L (RFC 6026 §8.7): INVITE server transaction lingers in Accepted, 64*T1.
    pub fn timer_l(&self) -> Duration {
        self.t1_x64()
    }

    /// Timer M (RFC 6026 §8.4): INVITE client transaction lingers in Accepted, 64*T1.
    pub fn timer_m(&self) -> Duration {
        self.t1_x64()
    }

    /// Next interval of a retransmit timer that doubles and is capped at T2 (Timer E in
    /// Trying §17.1.2.2, Timer G §17.2.1, the 2xx retransmission of §13.3.1.4).
    pub(crate) fn double_capped(&self, interval: Duration) -> Duration {
        floor(interval.saturating_mul(2).min(self.t2))
    }
}

/// Why a [`TimerConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimerConfigError {
    #[error("T1 must be greater than zero")]
    ZeroT1,
    #[error("T2 ({t2:?}) must not be below T1 ({t1:?})")]
    T2BelowT1 { t1: Duration, t2: Duration },
    #[error("T4 must be greater than zero")]
    ZeroT4,
}

/// Smallest retransmit interval: keeps a zero T1/T2 from re-arming a timer at the instant it
/// fired, which would make the caller spin.
const MIN_RETRANSMIT_INTERVAL: Duration = Duration::from_millis(1);

pub(crate) fn floor(interval: Duration) -> Duration {
    interval.max(MIN_RETRANSMIT_INTERVAL)
}

/// The RFC names of every transaction timer, used as keys of [`Timers`].
///
/// In the INVITE server transaction's Accepted state, Timer G paces the 2xx retransmissions
/// of §13.3.1.4 (same schedule as Timer G: T1 doubling up to T2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerName {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
}

impl TimerName {
    const ALL: [TimerName; 12] = [
        TimerName::A,
        TimerName::B,
        TimerName::D,
        TimerName::E,
        TimerName::F,
        TimerName::G,
        TimerName::H,
        TimerName::I,
        TimerName::J,
        TimerName::K,
        TimerName::L,
        TimerName::M,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Armed deadlines, one slot per [`TimerName`].
#[derive(Debug, Clone, Default)]
pub struct Timers {
    deadlines: [Option<Instant>; 12],
}

impl Timers {
    /// Arms `name` to fire `after` from `now`. A deadline beyond what `Instant` can represent
    /// (absurd configured T1) leaves the timer disarmed rather than panicking.
    pub fn set(&mut self, name: TimerName, now: Instant, after: Duration) {
        self.deadlines[name.index()] = now.checked_add(after);
    }

    pub fn stop(&mut self, name: TimerName) {
        self.deadlines[name.index()] = None;
    }

    pub fn stop_all(&mut self) {
        self.deadlines = [None; 12];
    }

    pub fn get(&self, name: TimerName) -> Option<Instant> {
        self.deadlines[name.index()]
    }

    pub fn is_armed(&self, name: TimerName) -> bool {
        self.get(name).is_some()
    }

    /// The earliest armed deadline.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Timers due at `now`, earliest first, with the deadline each was armed for. Callers fire
    /// each one only if it is still armed with that deadline (an earlier one may have stopped
    /// or re-armed it), so one `handle_timeout` fires every timer at most once even when a
    /// retransmit interval is zero.
    pub fn expired(&self, now: Instant) -> Vec<(TimerName, Instant)> {
        let mut due: Vec<(TimerName, Instant)> = TimerName::ALL
            .iter()
            .filter_map(|&n| self.get(n).filter(|&at| at <= now).map(|at| (n, at)))
            .collect();
        due.sort_by_key(|&(_, at)| at);
        due
    }

    /// Disarms `name` if it is still armed for `at`; returns whether it should fire.
    pub fn take_if(&mut self, name: TimerName, at: Instant) -> bool {
        if self.get(name) == Some(at) {
            self.stop(name);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_rfc3261_table_4() {
        let c = TimerConfig::default();
        assert_eq!(c.t1, Duration::from_millis(500));
        assert_eq!(c.t2, Duration::from_secs(4));
        assert_eq!(c.t4, Duration::from_secs(5));
        assert_eq!(c.timer_b(), Duration::from_secs(32));
        assert_eq!(c.timer_f(), Duration::from_secs(32));
        assert_eq!(c.timer_h(), Duration::from_secs(32));
        assert_eq!(c.timer_l(), Duration::from_secs(32));
        assert_eq!(c.timer_m(), Duration::from_secs(32));
        assert_eq!(c.timer_d(Reliability::Unreliable), Duration::from_secs(32));
        assert_eq!(c.timer_d(Reliability::Reliable), Duration::ZERO);
        assert_eq!(c.timer_i(Reliability::Unreliable), Duration::from_secs(5));
        assert_eq!(c.timer_i(Reliability::Reliable), Duration::ZERO);
        assert_eq!(c.timer_j(Reliability::Unreliable), Duration::from_secs(32));
        assert_eq!(c.timer_j(Reliability::Reliable), Duration::ZERO);
        assert_eq!(c.timer_k(Reliability::Unreliable), Duration::from_secs(5));
        assert_eq!(c.timer_k(Reliability::Reliable), Duration::ZERO);
    }

    #[test]
    fn validate_rejects_degenerate_configs() {
        assert_eq!(TimerConfig::default().validate(), Ok(()));
        let zero_t1 = TimerConfig {
            t1: Duration::ZERO,
            ..TimerConfig::default()
        };
        assert_eq!(zero_t1.validate(), Err(TimerConfigError::ZeroT1));
        let t2_low = TimerConfig {
            t2: Duration::from_millis(100),
            ..TimerConfig::default()
        };
        assert!(matches!(
            t2_low.validate(),
            Err(TimerConfigError::T2BelowT1 { .. })
        ));
        let zero_t4 = TimerConfig {
            t4: Duration::ZERO,
            ..TimerConfig::default()
        };
        assert_eq!(zero_t4.validate(), Err(TimerConfigError::ZeroT4));
    }

    #[test]
    fn retransmit_intervals_never_zero() {
        let c = TimerConfig {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::ZERO,
        };
        assert_eq!(c.retransmit_initial(), Duration::from_millis(1));
        assert_eq!(c.double_capped(Duration::ZERO), Duration::from_millis(1));
    }

    #[test]
    fn doubling_is_capped_at_t2() {
        let c = TimerConfig::default();
        let mut i = c.t1;
        let mut seen = vec![i];
        for _ in 0..5 {
            i = c.double_capped(i);
            seen.push(i);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn table_reports_earliest_and_expired_in_order() {
        let base = Instant::now();
        let mut t = Timers::default();
        assert_eq!(t.next_timeout(), None);
        t.set(TimerName::B, base, Duration::from_secs(32));
        t.set(TimerName::A, base, Duration::from_millis(500));
        assert_eq!(t.next_timeout(), Some(base + Duration::from_millis(500)));
        let due = t.expired(base + Duration::from_secs(40));
        assert_eq!(
            due.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![TimerName::A, TimerName::B]
        );
        assert!(t.take_if(TimerName::A, due[0].1));
        assert!(!t.take_if(TimerName::A, due[0].1));
        t.stop_all();
        assert_eq!(t.next_timeout(), None);
    }

    #[test]
    fn absurd_duration_disarms_instead_of_panicking() {
        let base = Instant::now();
        let mut t = Timers::default();
        t.set(TimerName::F, base, Duration::MAX);
        assert!(!t.is_armed(TimerName::F));
    }
}
