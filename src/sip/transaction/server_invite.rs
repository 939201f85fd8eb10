//! INVITE server transaction: RFC 3261 §17.2.1 as updated by RFC 6026 §7.1 (Accepted state,
//! Timer L), sans-IO.
//!
//! It sends the TU's serialized responses, answers INVITE retransmissions with the last
//! response, retransmits a 300-699 final until the ACK (Timer G, unreliable only) or Timer H,
//! and absorbs ACK retransmissions (Timer I). Unlike bare RFC 6026 it also owns the 2xx
//! retransmission of RFC 3261 §13.3.1.4 (T1 doubling up to T2, unreliable only) until the TU
//! reports the ACK for the 2xx with [`ServerInvite::handle_ack_2xx`]. It never parses or
//! builds messages (the TU sends 100 Trying itself), never matches the 2xx ACK (the dialog
//! does, §13.3.1.4), never reads a clock or touches a socket.
//!
//! # LIFECYCLE
//! - Proceeding (initial): INVITE retransmission -> last provisional re-sent (if any).
//!   - TU 1xx -> sent, stays. TU 2xx -> sent, Accepted (Timer L = 64*T1; 2xx retransmit
//!     timer, reusing Timer G, unreliable only). TU 300-699 -> sent, Completed (Timer G
//!     unreliable: T1 doubling to T2; Timer H = 64*T1).
//!   - Transport error -> `TransportError`, Terminated.
//! - Completed: INVITE retransmission -> final re-sent. Timer G -> final re-sent.
//!   ACK -> Confirmed (Timer I = T4 unreliable, 0 reliable). Timer H -> `Timeout`,
//!   Terminated. Transport error -> `TransportError`, Terminated.
//! - Confirmed: ACK and INVITE retransmissions absorbed. Timer I -> Terminated.
//! - Accepted: INVITE retransmissions absorbed (the 2xx retransmission covers them). TU 2xx
//!   -> sent, replaces the retransmitted 2xx. Timer G -> 2xx re-sent until `handle_ack_2xx`.
//!   An ACK matched by branch goes to the TU. Transport error -> `TransportError`, stays
//!   (RFC 6026). Timer L -> `NoAckFor2xx` if no ACK came, then Terminated.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timers::{TimerConfig, TimerName, Timers};
use super::{Deliver, Reliability, StatusClass, TransactionError, TransactionEvent};

/// States of [`ServerInvite`] (RFC 3261 Figure 7, RFC 6026 Figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

impl ServerInviteState {
    fn name(self) -> &'static str {
        match self {
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Confirmed => "Confirmed",
            Self::Accepted => "Accepted",
            Self::Terminated => "Terminated",
        }
    }
}

/// An INVITE server transaction. See the module docs for the lifecycle.
#[derive(Debug)]
pub struct ServerInvite {
    state: ServerInviteState,
    reliability: Reliability,
    config: TimerConfig,
    /// Last response sent: answered to INVITE retransmissions, retransmitted by Timer G.
    last_response: Option<Bytes>,
    /// Current Timer G (or 2xx retransmit) interval.
    timer_g_interval: Duration,
    /// Accepted only: the TU reported the ACK for the 2xx.
    ack_2xx_received: bool,
    timers: Timers,
    transmits: VecDeque<Bytes>,
    events: VecDeque<TransactionEvent>,
}

impl ServerInvite {
    /// Creates the transaction in Proceeding for a just-received INVITE. The TU sends 100
    /// Trying (or a final) with [`Self::send_response`] (§17.2.1: within 200 ms).
    pub fn new(reliability: Reliability, config: TimerConfig, _now: Instant) -> Self {
        Self {
            state: ServerInviteState::Proceeding,
            reliability,
            config,
            last_response: None,
            timer_g_interval: config.retransmit_initial(),
            ack_2xx_received: false,
            timers: Timers::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The TU sends a response; `response` is its serialized form.
    pub fn send_response(
        &mut self,
        status: u16,
        response: Bytes,
        now: Instant,
    ) -> Result<(), TransactionError> {
        let class = StatusClass::of(status).ok_or(TransactionError::InvalidStatus(status))?;
        match (self.state, class) {
            (ServerInviteState::Proceeding, StatusClass::Provisional) => {
                self.send(response);
            }
            (ServerInviteState::Proceeding, StatusClass::Success) => {
                self.send(response);
                self.state = ServerInviteState::Accepted;
                self.timers.set(TimerName::L, now, self.config.timer_l());
                self.arm_retransmit(now);
            }
            (ServerInviteState::Accepted, StatusClass::Success) => {
                // RFC 6026 §7.1: further 2xx from the TU are sent; we keep retransmitting the
                // newest one on the running schedule.
                self.send(response);
            }
            (ServerInviteState::Proceeding, StatusClass::Failure) => {
                self.send(response);
                self.state = ServerInviteState::Completed;
                self.timers.set(TimerName::H, now, self.config.timer_h());
                self.arm_retransmit(now);
            }
            (state, _) => {
                return Err(TransactionError::InvalidState {
                    status,
                    state: state.name(),
                });
            }
        }
        Ok(())
    }

    /// A retransmission of the INVITE arrived (matched by branch, §17.2.3).
    pub fn handle_request_retransmit(&mut self, _now: Instant) {
        match self.state {
            // §17.2.1: re-send the most recent provisional / the final.
            ServerInviteState::Proceeding | ServerInviteState::Completed => {
                if let Some(r) = &self.last_response {
                    self.transmits.push_back(r.clone());
                }
            }
            // RFC 6026 §7.1: absorbed in Accepted; RFC 3261: absorbed in Confirmed.
            ServerInviteState::Accepted
            | ServerInviteState::Confirmed
            | ServerInviteState::Terminated => {}
        }
    }

    /// An ACK matched this transaction by branch (§17.2.3), i.e. the ACK for a non-2xx final.
    /// Returns whether the TU should see it: only in Accepted (RFC 6026 §7.1), where it must
    /// then recognise it as the ACK for its 2xx and call [`Self::handle_ack_2xx`].
    pub fn handle_ack(&mut self, now: Instant) -> Deliver {
        match self.state {
            ServerInviteState::Completed => {
                self.state = ServerInviteState::Confirmed;
                self.timers.stop(TimerName::G);
                self.timers.stop(TimerName::H);
                let i = self.config.timer_i(self.reliability);
                if i.is_zero() {
                    self.terminate();
                } else {
                    self.timers.set(TimerName::I, now, i);
                }
                Deliver::Absorb
            }
            ServerInviteState::Accepted => Deliver::ToTu,
            _ => Deliver::Absorb,
        }
    }

    /// The TU (dialog) received the ACK for the 2xx (§13.3.1.4): stop retransmitting it. The
    /// transaction stays in Accepted until Timer L to absorb INVITE retransmissions.
    pub fn handle_ack_2xx(&mut self, _now: Instant) {
        if self.state == ServerInviteState::Accepted {
            self.ack_2xx_received = true;
            self.timers.stop(TimerName::G);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (name, at) in self.timers.expired(now) {
            if !self.timers.take_if(name, at) {
                continue;
            }
            match (name, self.state) {
                (TimerName::G, ServerInviteState::Completed | ServerInviteState::Accepted) => {
                    if let Some(r) = &self.last_response {
                        self.transmits.push_back(r.clone());
                    }
                    self.timer_g_interval = self.config.double_capped(self.timer_g_interval);
                    self.timers.set(TimerName::G, now, self.timer_g_interval);
                }
                (TimerName::H, ServerInviteState::Completed) => {
                    self.events.push_back(TransactionEvent::Timeout);
                    self.terminate();
                }
                (TimerName::I, ServerInviteState::Confirmed) => self.terminate(),
                (TimerName::L, ServerInviteState::Accepted) => {
                    if !self.ack_2xx_received {
                        self.events.push_back(TransactionEvent::NoAckFor2xx);
                    }
                    self.terminate();
                }
                _ => {}
            }
        }
    }

    /// The caller could not send a response (§17.2.4). In Accepted the TU is informed and
    /// the transaction stays (RFC 6026 §7.1) so INVITE retransmissions are still absorbed.
    pub fn handle_transport_error(&mut self) {
        match self.state {
            ServerInviteState::Proceeding | ServerInviteState::Completed => {
                self.events.push_back(TransactionEvent::TransportError);
                self.terminate();
            }
            ServerInviteState::Accepted => {
                self.events.push_back(TransactionEvent::TransportError);
            }
            ServerInviteState::Confirmed | ServerInviteState::Terminated => {}
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

    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerInviteState::Terminated
    }

    fn send(&mut self, response: Bytes) {
        self.transmits.push_back(response.clone());
        self.last_response = Some(response);
    }

    /// Timer G (§17.2.1) or the 2xx retransmission (§13.3.1.4): T1 first, unreliable only.
    fn arm_retransmit(&mut self, now: Instant) {
        if self.reliability == Reliability::Unreliable {
            self.timer_g_interval = self.config.retransmit_initial();
            self.timers.set(TimerName::G, now, self.timer_g_interval);
        }
    }

    fn terminate(&mut self) {
        if self.state == ServerInviteState::Terminated {
            return;
        }
        self.state = ServerInviteState::Terminated;
        self.timers.stop_all();
        self.events.push_back(TransactionEvent::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::test_driver::{ms, Driver};
    use crate::sip::transaction::Transaction;

    const TRYING: &[u8] = b"SIP/2.0 100 Trying\r\n\r\n";
    const RINGING: &[u8] = b"SIP/2.0 180 Ringing\r\n\r\n";
    const BUSY: &[u8] = b"SIP/2.0 486 Busy Here\r\n\r\n";
    const OK: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";

    fn start(d: &Driver, rel: Reliability, cfg: TimerConfig) -> Transaction {
        ServerInvite::new(rel, cfg, d.now).into()
    }

    fn inner(t: &mut Transaction) -> &mut ServerInvite {
        match t {
            Transaction::ServerInvite(s) => s,
            _ => unreachable!("test builds a server INVITE"),
        }
    }

    #[test]
    fn retransmitted_invite_resends_last_provisional() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        // Nothing sent yet: a retransmission gets nothing.
        inner(&mut t).handle_request_retransmit(d.now);
        d.drain(&mut t);
        assert!(d.sent.is_empty());
        inner(&mut t)
            .send_response(100, Bytes::from_static(TRYING), d.now)
            .unwrap();
        let now = d.set_now(ms(300));
        inner(&mut t)
            .send_response(180, Bytes::from_static(RINGING), now)
            .unwrap();
        let now = d.set_now(ms(500));
        inner(&mut t).handle_request_retransmit(now);
        d.drain(&mut t);
        assert_eq!(d.sent_payloads(), vec![TRYING, RINGING, RINGING]);
        assert_eq!(inner(&mut t).state(), ServerInviteState::Proceeding);
        // No timers in Proceeding.
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn failure_retransmitted_by_g_until_ack_then_i() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        inner(&mut t)
            .send_response(486, Bytes::from_static(BUSY), d.now)
            .unwrap();
        assert_eq!(inner(&mut t).state(), ServerInviteState::Completed);
        d.advance_to(&mut t, ms(12_000));
        // G intervals 0.5, 1, 2, 4, 4 ...
        assert_eq!(d.send_times_ms(), vec![0, 500, 1500, 3500, 7500, 11500]);
        assert!(d.sent_payloads().iter().all(|p| *p == BUSY));
        // INVITE retransmission in Completed: final re-sent.
        inner(&mut t).handle_request_retransmit(d.now);
        d.drain(&mut t);
        assert_eq!(d.sent.len(), 7);
        // ACK at 12 s: Confirmed, no more retransmits, I = T4.
        let now = d.set_now(ms(12_000));
        assert_eq!(inner(&mut t).handle_ack(now), Deliver::Absorb);
        assert_eq!(inner(&mut t).state(), ServerInviteState::Confirmed);
        // ACK and INVITE retransmissions absorbed in Confirmed.
        assert_eq!(inner(&mut t).handle_ack(now), Deliver::Absorb);
        inner(&mut t).handle_request_retransmit(now);
        d.run(&mut t);
        assert_eq!(d.sent.len(), 7);
        assert_eq!(d.events_ms(), vec![(17_000, TransactionEvent::Terminated)]);
    }

    #[test]
    fn failure_without_ack_times_out_at_h() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        inner(&mut t)
            .send_response(486, Bytes::from_static(BUSY), d.now)
            .unwrap();
        d.run(&mut t);
        assert_eq!(
            d.send_times_ms(),
            vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(
            d.events_ms(),
            vec![
                (32_000, TransactionEvent::Timeout),
                (32_000, TransactionEvent::Terminated)
            ]
        );
    }

    #[test]
    fn reliable_failure_sent_once_and_ack_terminates_at_once() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Reliable, TimerConfig::default());
        inner(&mut t)
            .send_response(486, Bytes::from_static(BUSY), d.now)
            .unwrap();
        d.advance_to(&mut t, ms(10_000));
        assert_eq!(d.send_times_ms(), vec![0]);
        let now = d.set_now(ms(10_000));
        assert_eq!(inner(&mut t).handle_ack(now), Deliver::Absorb);
        d.drain(&mut t);
        assert_eq!(d.events_ms(), vec![(10_000, TransactionEvent::Terminated)]);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn ok_retransmitted_until_ack_for_2xx_and_invite_retransmits_absorbed() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        inner(&mut t)
            .send_response(200, Bytes::from_static(OK), d.now)
            .unwrap();
        assert_eq!(inner(&mut t).state(), ServerInviteState::Accepted);
        d.advance_to(&mut t, ms(5_000));
        assert_eq!(d.send_times_ms(), vec![0, 500, 1500, 3500]);
        // Retransmitted INVITE in Accepted: absorbed (no extra send).
        let now = d.set_now(ms(5_000));
        inner(&mut t).handle_request_retransmit(now);
        d.drain(&mut t);
        assert_eq!(d.sent.len(), 4);
        // Provisional or failure after 2xx is TU misuse.
        assert!(matches!(
            inner(&mut t).send_response(486, Bytes::from_static(BUSY), now),
            Err(TransactionError::InvalidState { status: 486, .. })
        ));
        // The dialog matched the ACK for the 2xx at 6 s.
        let now = d.set_now(ms(6_000));
        inner(&mut t).handle_ack_2xx(now);
        d.run(&mut t);
        assert_eq!(d.send_times_ms(), vec![0, 500, 1500, 3500]);
        // Timer L: Terminated without NoAckFor2xx.
        assert_eq!(d.events_ms(), vec![(32_000, TransactionEvent::Terminated)]);
    }

    #[test]
    fn ok_without_ack_reports_no_ack_for_2xx_at_timer_l() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        inner(&mut t)
            .send_response(200, Bytes::from_static(OK), d.now)
            .unwrap();
        d.run(&mut t);
        // T1 doubling to T2 for the whole 64*T1.
        assert_eq!(
            d.send_times_ms(),
            vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert!(d.sent_payloads().iter().all(|p| *p == OK));
        assert_eq!(
            d.events_ms(),
            vec![
                (32_000, TransactionEvent::NoAckFor2xx),
                (32_000, TransactionEvent::Terminated)
            ]
        );
    }

    #[test]
    fn reliable_ok_not_retransmitted_but_no_ack_still_reported() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Reliable, TimerConfig::default());
        inner(&mut t)
            .send_response(200, Bytes::from_static(OK), d.now)
            .unwrap();
        d.run(&mut t);
        assert_eq!(d.send_times_ms(), vec![0]);
        assert_eq!(
            d.events_ms(),
            vec![
                (32_000, TransactionEvent::NoAckFor2xx),
                (32_000, TransactionEvent::Terminated)
            ]
        );
    }

    #[test]
    fn ack_by_branch_in_accepted_goes_to_tu_and_transport_error_keeps_accepted() {
        let d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        inner(&mut t)
            .send_response(200, Bytes::from_static(OK), d.now)
            .unwrap();
        assert_eq!(inner(&mut t).handle_ack(d.now), Deliver::ToTu);
        t.handle_transport_error();
        assert_eq!(t.poll_event(), Some(TransactionEvent::TransportError));
        assert_eq!(inner(&mut t).state(), ServerInviteState::Accepted);
    }

    #[test]
    fn transport_error_in_proceeding_terminates() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        inner(&mut t)
            .send_response(100, Bytes::from_static(TRYING), d.now)
            .unwrap();
        t.handle_transport_error();
        d.drain(&mut t);
        assert_eq!(
            d.events_ms(),
            vec![
                (0, TransactionEvent::TransportError),
                (0, TransactionEvent::Terminated)
            ]
        );
        assert!(inner(&mut t)
            .send_response(200, Bytes::from_static(OK), d.now)
            .is_err());
    }

    #[test]
    fn invalid_status_rejected() {
        let d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        assert_eq!(
            inner(&mut t).send_response(99, Bytes::new(), d.now),
            Err(TransactionError::InvalidStatus(99))
        );
        assert_eq!(
            inner(&mut t).send_response(700, Bytes::new(), d.now),
            Err(TransactionError::InvalidStatus(700))
        );
        assert_eq!(inner(&mut t).state(), ServerInviteState::Proceeding);
    }

    #[test]
    fn configurable_timers_rescale_g_h_i_l() {
        let cfg = TimerConfig {
            t1: ms(100),
            t2: ms(400),
            t4: ms(1000),
        };
        // G/H.
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, cfg);
        inner(&mut t)
            .send_response(486, Bytes::from_static(BUSY), d.now)
            .unwrap();
        d.advance_to(&mut t, ms(1600));
        assert_eq!(d.send_times_ms(), vec![0, 100, 300, 700, 1100, 1500]);
        d.run(&mut t);
        assert_eq!(d.events_ms()[0], (6400, TransactionEvent::Timeout));
        // I.
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, cfg);
        inner(&mut t)
            .send_response(486, Bytes::from_static(BUSY), d.now)
            .unwrap();
        let now = d.set_now(ms(150));
        assert_eq!(inner(&mut t).handle_ack(now), Deliver::Absorb);
        d.run(&mut t);
        assert_eq!(d.events_ms(), vec![(1150, TransactionEvent::Terminated)]);
        // 2xx retransmission and L.
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, cfg);
        inner(&mut t)
            .send_response(200, Bytes::from_static(OK), d.now)
            .unwrap();
        d.advance_to(&mut t, ms(1600));
        assert_eq!(d.send_times_ms(), vec![0, 100, 300, 700, 1100, 1500]);
        d.run(&mut t);
        assert_eq!(d.events_ms()[0], (6400, TransactionEvent::NoAckFor2xx));
    }
}
