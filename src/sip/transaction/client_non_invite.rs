//! Non-INVITE client transaction (RFC 3261 §17.1.2), sans-IO: BYE, CANCEL, OPTIONS, REGISTER,
//! INFO, UPDATE, ...
//!
//! It retransmits the serialized request (Timer E, unreliable only), times out (Timer F), and
//! absorbs response retransmissions after the final (Timer K). It never parses messages,
//! never reads a clock or touches a socket.
//!
//! # LIFECYCLE
//! - Trying: request sent; Timer E (unreliable: T1, doubling, capped at T2), Timer F (64*T1).
//!   - 1xx -> Proceeding, to TU.  200-699 -> Completed (Timer K), to TU.
//!   - Timer F -> `Timeout`, Terminated. Transport error -> `TransportError`, Terminated.
//! - Proceeding: as Trying, but each Timer E firing re-arms it with T2 (§17.1.2.2).
//! - Completed: responses absorbed; Timer K (T4 unreliable, 0 reliable) -> Terminated.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timers::{floor, TimerConfig, TimerName, Timers};
use super::{Deliver, Reliability, StatusClass, TransactionEvent};

/// States of [`ClientNonInvite`] (RFC 3261 Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A non-INVITE client transaction. See the module docs for the lifecycle.
#[derive(Debug)]
pub struct ClientNonInvite {
    state: ClientNonInviteState,
    reliability: Reliability,
    config: TimerConfig,
    request: Bytes,
    /// Current Timer E interval.
    timer_e_interval: Duration,
    timers: Timers,
    transmits: VecDeque<Bytes>,
    events: VecDeque<TransactionEvent>,
}

impl ClientNonInvite {
    /// Starts the transaction in Trying: queues the first transmission of `request`, arms
    /// Timer E (unreliable only) and Timer F (§17.1.2.2).
    pub fn new(
        request: Bytes,
        reliability: Reliability,
        config: TimerConfig,
        now: Instant,
    ) -> Self {
        let mut timers = Timers::default();
        let timer_e_interval = config.retransmit_initial();
        if reliability == Reliability::Unreliable {
            timers.set(TimerName::E, now, timer_e_interval);
        }
        timers.set(TimerName::F, now, config.timer_f());
        Self {
            state: ClientNonInviteState::Trying,
            reliability,
            config,
            transmits: VecDeque::from([request.clone()]),
            request,
            timer_e_interval,
            timers,
            events: VecDeque::new(),
        }
    }

    /// Feeds a response matched to this transaction.
    pub fn handle_response(&mut self, status: u16, now: Instant) -> Deliver {
        let Some(class) = StatusClass::of(status) else {
            return Deliver::Absorb;
        };
        match self.state {
            ClientNonInviteState::Trying | ClientNonInviteState::Proceeding => {
                if class == StatusClass::Provisional {
                    // Timer E keeps its pending deadline; from its next firing on it
                    // uses T2 (§17.1.2.2).
                    self.state = ClientNonInviteState::Proceeding;
                } else {
                    self.state = ClientNonInviteState::Completed;
                    self.timers.stop_all();
                    let k = self.config.timer_k(self.reliability);
                    if k.is_zero() {
                        self.terminate();
                    } else {
                        self.timers.set(TimerName::K, now, k);
                    }
                }
                Deliver::ToTu
            }
            ClientNonInviteState::Completed | ClientNonInviteState::Terminated => Deliver::Absorb,
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (name, at) in self.timers.expired(now) {
            if !self.timers.take_if(name, at) {
                continue;
            }
            match (name, self.state) {
                (TimerName::E, ClientNonInviteState::Trying | ClientNonInviteState::Proceeding) => {
                    self.transmits.push_back(self.request.clone());
                    self.timer_e_interval = if self.state == ClientNonInviteState::Proceeding {
                        floor(self.config.t2)
                    } else {
                        self.config.double_capped(self.timer_e_interval)
                    };
                    self.timers.set(TimerName::E, now, self.timer_e_interval);
                }
                (TimerName::F, ClientNonInviteState::Trying | ClientNonInviteState::Proceeding) => {
                    self.events.push_back(TransactionEvent::Timeout);
                    self.terminate();
                }
                (TimerName::K, ClientNonInviteState::Completed) => self.terminate(),
                _ => {}
            }
        }
    }

    /// The caller could not send the request (§17.1.4). Nothing is sent in Completed, so the
    /// report is ignored there.
    pub fn handle_transport_error(&mut self) {
        if matches!(
            self.state,
            ClientNonInviteState::Trying | ClientNonInviteState::Proceeding
        ) {
            self.events.push_back(TransactionEvent::TransportError);
            self.terminate();
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.events.pop_front()
    }

    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientNonInviteState::Terminated
    }

    fn terminate(&mut self) {
        if self.state == ClientNonInviteState::Terminated {
            return;
        }
        self.state = ClientNonInviteState::Terminated;
        self.timers.stop_all();
        self.events.push_back(TransactionEvent::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::test_driver::{ms, Driver};
    use crate::sip::transaction::Transaction;

    const BYE: &[u8] = b"BYE sip:bob@example.com SIP/2.0\r\n\r\n";

    fn start(d: &Driver, rel: Reliability, cfg: TimerConfig) -> Transaction {
        ClientNonInvite::new(Bytes::from_static(BYE), rel, cfg, d.now).into()
    }

    fn inner(t: &mut Transaction) -> &mut ClientNonInvite {
        match t {
            Transaction::ClientNonInvite(c) => c,
            _ => unreachable!("test builds a client non-INVITE"),
        }
    }

    #[test]
    fn udp_no_answer_timer_e_capped_at_t2_then_timer_f() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        d.run(&mut t);
        // Intervals 0.5, 1, 2, 4, 4, 4, ...
        assert_eq!(
            d.send_times_ms(),
            vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert!(d.sent_payloads().iter().all(|p| *p == BYE));
        assert_eq!(
            d.events_ms(),
            vec![
                (32000, TransactionEvent::Timeout),
                (32000, TransactionEvent::Terminated)
            ]
        );
    }

    #[test]
    fn reliable_no_answer_sends_once() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Reliable, TimerConfig::default());
        d.run(&mut t);
        assert_eq!(d.send_times_ms(), vec![0]);
        assert_eq!(
            d.events_ms(),
            vec![
                (32000, TransactionEvent::Timeout),
                (32000, TransactionEvent::Terminated)
            ]
        );
    }

    #[test]
    fn after_provisional_retransmits_every_t2() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        d.advance_to(&mut t, ms(600));
        let now = d.set_now(ms(600));
        assert_eq!(inner(&mut t).handle_response(100, now), Deliver::ToTu);
        assert_eq!(inner(&mut t).state(), ClientNonInviteState::Proceeding);
        d.run(&mut t);
        // The pending E (due 1.5 s) still fires, then every T2 = 4 s until F at 32 s.
        assert_eq!(
            d.send_times_ms(),
            vec![0, 500, 1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500]
        );
        assert_eq!(
            d.events_ms(),
            vec![
                (32000, TransactionEvent::Timeout),
                (32000, TransactionEvent::Terminated)
            ]
        );
    }

    #[test]
    fn final_response_then_timer_k() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        d.advance_to(&mut t, ms(800));
        let now = d.set_now(ms(800));
        assert_eq!(inner(&mut t).handle_response(200, now), Deliver::ToTu);
        assert_eq!(inner(&mut t).state(), ClientNonInviteState::Completed);
        // Retransmitted final and late provisional: absorbed.
        let now = d.set_now(ms(1000));
        assert_eq!(inner(&mut t).handle_response(200, now), Deliver::Absorb);
        assert_eq!(inner(&mut t).handle_response(180, now), Deliver::Absorb);
        d.run(&mut t);
        assert_eq!(d.send_times_ms(), vec![0, 500]);
        // K = T4 = 5 s after the final.
        assert_eq!(d.events_ms(), vec![(5800, TransactionEvent::Terminated)]);
    }

    #[test]
    fn reliable_final_terminates_at_once() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Reliable, TimerConfig::default());
        let now = d.set_now(ms(50));
        assert_eq!(inner(&mut t).handle_response(404, now), Deliver::ToTu);
        d.drain(&mut t);
        assert_eq!(d.events_ms(), vec![(50, TransactionEvent::Terminated)]);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn transport_error_terminates() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        t.handle_transport_error();
        d.drain(&mut t);
        assert_eq!(
            d.events_ms(),
            vec![
                (0, TransactionEvent::TransportError),
                (0, TransactionEvent::Terminated)
            ]
        );
    }

    #[test]
    fn configurable_timers_rescale_e_f_k() {
        let mut d = Driver::new();
        let cfg = TimerConfig {
            t1: ms(100),
            t2: ms(400),
            t4: ms(1000),
        };
        let mut t = start(&d, Reliability::Unreliable, cfg);
        d.run(&mut t);
        // E: 0.1, 0.2, 0.4, 0.4, ... F at 6.4 s.
        let expected: Vec<u128> = [0, 100, 300, 700]
            .into_iter()
            .chain((1..=14).map(|i| 700 + 400 * i))
            .collect();
        assert_eq!(d.send_times_ms(), expected);
        assert_eq!(d.events_ms()[0], (6400, TransactionEvent::Timeout));

        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, cfg);
        let now = d.set_now(ms(50));
        assert_eq!(inner(&mut t).handle_response(200, now), Deliver::ToTu);
        d.run(&mut t);
        assert_eq!(d.events_ms(), vec![(1050, TransactionEvent::Terminated)]);
    }
}
