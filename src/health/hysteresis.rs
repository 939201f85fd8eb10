//! Up/down hysteresis over a stream of boolean results (pingora-style health check counting).
//!
//! Pure counting: `down_after` consecutive failures turn an `Up` subject `Down`, `up_after`
//! consecutive successes turn a `Down` subject `Up`. It never looks at a clock, never sends a
//! probe and never knows what a "result" was; the caller ([`super::HealthTable`]) decides that.
//!
//! # LIFECYCLE
//!
//! ```text
//!            failure x down_after
//!   Up  ───────────────────────────▶  Down
//!   ▲                                  │
//!   └──────────────────────────────────┘
//!            success x up_after
//! ```
//! A success while `Up` resets the failure run; a failure while `Down` resets the success run.

use std::fmt;

/// Binary health of a subject (an address, or a whole target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpDown {
    /// Usable.
    Up,
    /// Not usable.
    Down,
}

impl fmt::Display for UpDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpDown::Up => "up",
            UpDown::Down => "down",
        })
    }
}

/// A change of [`UpDown`] state reported by [`Hysteresis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before the result.
    pub from: UpDown,
    /// State after the result.
    pub to: UpDown,
}

/// Consecutive-result counter with separate thresholds for going down and coming back up.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    state: UpDown,
    down_after: u32,
    up_after: u32,
    consecutive_failures: u32,
    consecutive_successes: u32,
}

impl Hysteresis {
    /// A new counter in `initial` state. Thresholds of 0 are treated as 1 (a single result
    /// always suffices), so a misconfiguration cannot wedge the subject in one state.
    pub fn new(initial: UpDown, down_after: u32, up_after: u32) -> Self {
        Self {
            state: initial,
            down_after: down_after.max(1),
            up_after: up_after.max(1),
            consecutive_failures: 0,
            consecutive_successes: 0,
        }
    }

    /// New thresholds (a config reload); the state and the current runs are kept, so a run
    /// already at the new threshold takes effect with the next result.
    pub fn set_thresholds(&mut self, down_after: u32, up_after: u32) {
        self.down_after = down_after.max(1);
        self.up_after = up_after.max(1);
    }

    /// Current state.
    pub fn state(&self) -> UpDown {
        self.state
    }

    /// Length of the current run of failures (0 after any success).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Length of the current run of successes (0 after any failure).
    pub fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes
    }

    /// Feed one result; returns the transition if this result crossed a threshold.
    pub fn handle_result(&mut self, success: bool) -> Option<Transition> {
        if success {
            self.consecutive_failures = 0;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            if self.state == UpDown::Down && self.consecutive_successes >= self.up_after {
                return Some(self.flip(UpDown::Up));
            }
        } else {
            self.consecutive_successes = 0;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.state == UpDown::Up && self.consecutive_failures >= self.down_after {
                return Some(self.flip(UpDown::Down));
            }
        }
        None
    }

    /// Force a state without a transition report (e.g. pinging switched off: no evidence, so
    /// the subject is assumed up). Counters restart.
    pub fn reset(&mut self, state: UpDown) {
        self.state = state;
        self.consecutive_failures = 0;
        self.consecutive_successes = 0;
    }

    fn flip(&mut self, to: UpDown) -> Transition {
        let from = self.state;
        self.state = to;
        // Runs restart at a transition: coming back up needs a fresh run of successes even if
        // the failure run keeps growing, and vice versa.
        self.consecutive_failures = 0;
        self.consecutive_successes = 0;
        Transition { from, to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_exactly_down_after_failures() {
        let mut h = Hysteresis::new(UpDown::Up, 3, 2);
        assert_eq!(h.handle_result(false), None);
        assert_eq!(h.handle_result(false), None);
        assert_eq!(
            h.handle_result(false),
            Some(Transition {
                from: UpDown::Up,
                to: UpDown::Down
            })
        );
        assert_eq!(h.state(), UpDown::Down);
        // More failures while down report nothing.
        assert_eq!(h.handle_result(false), None);
    }

    #[test]
    fn success_resets_failure_run() {
        let mut h = Hysteresis::new(UpDown::Up, 3, 2);
        h.handle_result(false);
        h.handle_result(false);
        assert_eq!(h.handle_result(true), None);
        h.handle_result(false);
        h.handle_result(false);
        assert_eq!(h.state(), UpDown::Up);
        assert_eq!(h.consecutive_failures(), 2);
    }

    #[test]
    fn comes_back_up_after_up_after_successes() {
        let mut h = Hysteresis::new(UpDown::Down, 3, 2);
        assert_eq!(h.handle_result(true), None);
        assert_eq!(h.handle_result(false), None);
        assert_eq!(h.handle_result(true), None);
        assert_eq!(
            h.handle_result(true),
            Some(Transition {
                from: UpDown::Down,
                to: UpDown::Up
            })
        );
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut h = Hysteresis::new(UpDown::Up, 0, 0);
        assert!(h.handle_result(false).is_some());
        assert!(h.handle_result(true).is_some());
    }
}
