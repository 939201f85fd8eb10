//! How the drill's synthetic callers talk: continuously (the default: a packet every 20 ms
//! until they hang up), or in turns like people (`--quiet-agents`): a talk spurt, then a
//! pause while they listen, again and again, and silence for the last `--caller-silence`
//! before they hang up. The drill's peers only ever answer what they hear, so while a caller
//! pauses its agent sends nothing either — what voice agents with voice activity detection
//! and turn-taking do, and the silence holdfast must not mistake for a dead agent.
//!
//! In turns, the calls placed before the failure are spread over three [`Slot`]s, so the
//! failure finds some callers talking and others in a pause (the hard case: nothing flows to
//! the dead agent, so nothing bounces off it until the caller talks again or a check runs).
//! All of them have talked before the failure and most have paused for longer than the
//! default `media.ai_timeout`, so a healthy quiet agent has been checked and kept first.
//!
//! Pure: arithmetic on durations; never reads a clock or sleeps.

use std::time::Duration;

/// The default talk spurt of `--quiet-agents` (`--talk`).
pub const DEFAULT_TALK: Duration = Duration::from_secs(2);
/// The default pause between talk spurts (`--pause`): longer than the default
/// `media.ai_timeout` (5 s), so every pause makes the agent's leg suspect and checked.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(6);
/// How long callers in turns stay silent before they hang up (`--caller-silence`).
pub const DEFAULT_CALLER_SILENCE: Duration = Duration::from_secs(3);
/// Talk a call must do after the failure for its verdict, when callers talk continuously:
/// twice the window in which the caller must still hear its agent.
pub const CONTINUOUS_TALK_AFTER_FAILURE: Duration = Duration::from_secs(2);
/// How long before its next talk spurt a [`Slot::PauseEnd`] call is when the failure comes,
/// at most: sooner than health pings can notice a dead peer (two missed pings, 1.5 s at the
/// least in the drill's config), so the caller's first packet meets the dead agent.
const PAUSE_END_LEAD: Duration = Duration::from_millis(500);
/// Shortest `--talk` and `--pause`: half a talk spurt is what a caller talking at the
/// failure has left to hear its new agent in.
pub const MIN_TURN: Duration = Duration::from_secs(1);

/// A caller's turns: `talk`, then `pause`, over and over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turns {
    pub talk: Duration,
    pub pause: Duration,
}

/// Where a call placed before the failure is in its turns when the failure comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Half-way through a talk spurt: its audio meets the dead agent at once.
    Talking,
    /// Half-way through a pause: health pings or the liveness check find the dead agent,
    /// or the caller's next spurt does (ICMP).
    Pause,
    /// At the end of a pause: the caller talks again before health pings can tell, and its
    /// first packets meet the dead agent (ICMP port unreachable).
    PauseEnd,
}

impl Slot {
    /// The slots in the order calls are dealt to them.
    pub const ALL: [Slot; 3] = [Slot::Talking, Slot::Pause, Slot::PauseEnd];
}

fn rem(t: Duration, m: Duration) -> Duration {
    let m = m.as_nanos().max(1);
    Duration::from_nanos(u64::try_from(t.as_nanos() % m).unwrap_or(0))
}

impl Turns {
    pub fn cycle(self) -> Duration {
        self.talk + self.pause
    }

    /// When the failure comes, from the epoch (when the first call is placed): half-way
    /// through the second talk spurt of a [`Slot::Talking`] call, so every call has talked
    /// before it and the `Talking` and `PauseEnd` calls have sat through a whole pause.
    pub fn failure_at(self) -> Duration {
        self.cycle() + self.talk / 2
    }

    /// Position in the cycle (0 = a talk spurt starts) of a `slot` call at the failure.
    fn position_at_failure(self, slot: Slot) -> Duration {
        match slot {
            Slot::Talking => self.talk / 2,
            Slot::Pause => self.talk + self.pause / 2,
            Slot::PauseEnd => self.cycle() - PAUSE_END_LEAD.min(self.pause / 4),
        }
    }

    /// The offset of a `slot` call: its position in the cycle at the epoch.
    pub fn offset(self, slot: Slot) -> Duration {
        let c = self.cycle();
        rem(
            self.position_at_failure(slot) + c - rem(self.failure_at(), c),
            c,
        )
    }

    /// Whether a caller at `offset` talks `t` after its origin.
    pub fn talking(self, offset: Duration, t: Duration) -> bool {
        rem(t + offset, self.cycle()) < self.talk
    }

    /// When a caller at `offset` first talks, from its origin.
    pub fn first_talk(self, offset: Duration) -> Duration {
        rem(self.cycle() - rem(offset, self.cycle()), self.cycle())
    }

    /// The shortest hold after which every call placed before the failure has talked again
    /// (the longest wait is a [`Slot::Pause`] call's: half a pause, then a whole spurt)
    /// before the callers fall silent for `silence`.
    pub fn min_hold(self, silence: Duration) -> Duration {
        self.pause / 2 + self.talk + silence
    }
}

/// How one synthetic call talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speech {
    /// Every 20 ms from the answer until told to fall silent.
    Continuous,
    /// In turns, at `offset` in its cycle at the origin: the drill's epoch, or the answer
    /// (`from_answer`: a call placed after the failure talks first, like an agent that
    /// greets).
    Turns {
        turns: Turns,
        offset: Duration,
        from_answer: bool,
    },
}

impl Speech {
    /// Whether the caller talks, `since_epoch` after the drill's epoch and `since_answer`
    /// after its call was answered.
    pub fn talking(self, since_epoch: Duration, since_answer: Duration) -> bool {
        match self {
            Speech::Continuous => true,
            Speech::Turns {
                turns,
                offset,
                from_answer,
            } => turns.talking(
                offset,
                if from_answer {
                    since_answer
                } else {
                    since_epoch
                },
            ),
        }
    }

    /// How long after its origin the caller first talks (how much longer than its setup it
    /// may take to hear its agent).
    pub fn first_talk(self) -> Duration {
        match self {
            Speech::Turns {
                turns,
                offset,
                from_answer: false,
            } => turns.first_talk(offset),
            _ => Duration::ZERO,
        }
    }
}

/// The shortest `--hold` the drill can judge: with `turns`, every call must talk again after
/// the failure and then be silent for `silence`; continuously, it must talk for
/// [`CONTINUOUS_TALK_AFTER_FAILURE`] after the failure before falling silent.
pub fn min_hold(turns: Option<Turns>, silence: Duration) -> Duration {
    match turns {
        Some(t) => t.min_hold(silence),
        None => silence + CONTINUOUS_TALK_AFTER_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    const T: Turns = Turns {
        talk: DEFAULT_TALK,
        pause: DEFAULT_PAUSE,
    };

    /// Talk spurts of a `slot` call within the first `until` seconds, as (start, end) in
    /// seconds, sampled every 10 ms.
    fn spurts(slot: Slot, until: f64) -> Vec<(f64, f64)> {
        let off = T.offset(slot);
        let mut out: Vec<(f64, f64)> = Vec::new();
        let mut was = false;
        for i in 0..(until * 100.0) as u32 {
            let t = f64::from(i) / 100.0;
            let now = T.talking(off, s(t));
            match (was, now) {
                (false, true) => out.push((t, t)),
                (true, false) => {
                    if let Some(l) = out.last_mut() {
                        l.1 = t;
                    }
                }
                _ => {}
            }
            was = now;
        }
        if was {
            if let Some(l) = out.last_mut() {
                l.1 = until;
            }
        }
        out
    }

    #[test]
    fn the_default_turns_put_the_failure_where_planned() {
        assert_eq!(T.failure_at(), s(9.0));
        assert_eq!(
            spurts(Slot::Talking, 17.0),
            vec![(0.0, 2.0), (8.0, 10.0), (16.0, 17.0)]
        );
        assert_eq!(spurts(Slot::Pause, 17.0), vec![(4.0, 6.0), (12.0, 14.0)]);
        assert_eq!(spurts(Slot::PauseEnd, 17.0), vec![(1.5, 3.5), (9.5, 11.5)]);
        let f = T.failure_at();
        assert!(T.talking(T.offset(Slot::Talking), f));
        for slot in [Slot::Pause, Slot::PauseEnd] {
            assert!(
                !T.talking(T.offset(slot), f),
                "{slot:?} pauses at the failure"
            );
        }
        assert!(T.talking(T.offset(Slot::PauseEnd), f + s(0.5)));
        assert!(!T.talking(T.offset(Slot::PauseEnd), f + s(0.49)));
        // Each slot's first spurt comes before the failure; the latest after half a cycle.
        assert_eq!(T.first_talk(T.offset(Slot::Talking)), Duration::ZERO);
        assert_eq!(T.first_talk(T.offset(Slot::Pause)), s(4.0));
        assert_eq!(T.first_talk(T.offset(Slot::PauseEnd)), s(1.5));
        // 8 s: the Pause call talks again 12–14 s, then 3 s of silence until 17 s.
        assert_eq!(T.min_hold(DEFAULT_CALLER_SILENCE), s(8.0));
        assert_eq!(min_hold(None, Duration::ZERO), s(2.0));
        assert_eq!(min_hold(Some(T), s(1.0)), s(6.0));
    }

    #[test]
    fn other_turns_keep_the_slots_apart() {
        for (talk, pause) in [(1.0, 1.0), (1.0, 12.0), (3.0, 5.0), (2.5, 2.0)] {
            let t = Turns {
                talk: s(talk),
                pause: s(pause),
            };
            let f = t.failure_at();
            let at = |slot| t.talking(t.offset(slot), f);
            assert!(at(Slot::Talking), "{t:?}");
            assert!(!at(Slot::Pause) && !at(Slot::PauseEnd), "{t:?}");
            for slot in Slot::ALL {
                assert!(t.first_talk(t.offset(slot)) < f, "{t:?} {slot:?}");
                assert!(
                    t.first_talk(t.offset(slot)) <= t.cycle() / 2,
                    "{t:?} {slot:?}"
                );
            }
            // Every slot talks again within min_hold - silence of the failure, for a whole
            // spurt (the Talking call: the rest of its spurt).
            let again = |slot| {
                let off = t.offset(slot);
                let mut x = f;
                while t.talking(off, x) {
                    x += s(0.01);
                }
                while !t.talking(off, x) {
                    x += s(0.01);
                }
                x + t.talk
            };
            let end = f + t.min_hold(Duration::ZERO) + s(0.02);
            assert!(again(Slot::Pause) <= end, "{t:?}");
            assert!(again(Slot::PauseEnd) <= end, "{t:?}");
        }
    }

    #[test]
    fn speech_from_the_answer_talks_first() {
        let sp = Speech::Turns {
            turns: T,
            offset: Duration::ZERO,
            from_answer: true,
        };
        assert!(sp.talking(s(100.0), s(0.0)));
        assert!(!sp.talking(s(0.0), s(2.5)));
        assert!(sp.talking(s(0.0), s(8.1)));
        assert_eq!(sp.first_talk(), Duration::ZERO);
        assert!(Speech::Continuous.talking(s(3.0), s(3.0)));
        let pause = Speech::Turns {
            turns: T,
            offset: T.offset(Slot::Pause),
            from_answer: false,
        };
        assert_eq!(pause.first_talk(), s(4.0));
    }
}
