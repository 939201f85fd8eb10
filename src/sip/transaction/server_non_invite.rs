//! Non-INVITE server transaction (RFC 3261 §17.2.2), sans-IO.
//!
//! It sends the TU's serialized responses, answers request retransmissions with the last
//! response, and lingers after the final to absorb retransmissions (Timer J). It never
//! retransmits on its own (the client drives retransmission for non-INVITE), never parses or
//! builds messages, never reads a clock or touches a socket.
//!
//! # LIFECYCLE
//! - Trying (initial): request retransmissions absorbed (nothing to resend yet).
//!   TU 1xx -> sent, Proceeding. TU 200-699 -> sent, Completed.
//! - Proceeding: request retransmission -> last provisional re-sent. TU 1xx -> sent.
//!   TU 200-699 -> sent, Completed. Transport error -> `TransportError`, Terminated.
//! - Completed: request retransmission -> final re-sent. Timer J (64*T1 unreliable, 0
//!   reliable) -> Terminated. Transport error -> `TransportError`, Terminated.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::timers::{TimerConfig, TimerName, Timers};
use super::{Reliability, StatusClass, TransactionError, TransactionEvent};

/// States of [`ServerNonInvite`] (RFC 3261 Figure 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

impl ServerNonInviteState {
    fn name(self) -> &'static str {
        match self {
            Self::Trying => "Trying",
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Terminated => "Terminated",
        }
    }
}

/// A non-INVITE server transaction. See the module docs for the lifecycle.
#[derive(Debug)]
pub struct ServerNonInvite {
    state: ServerNonInviteState,
    reliability: Reliability,
    config: TimerConfig,
    last_response: Option<Bytes>,
    timers: Timers,
    transmits: VecDeque<Bytes>,
    events: VecDeque<TransactionEvent>,
}

impl ServerNonInvite {
    /// Creates the transaction in Trying for a just-received request.
    pub fn new(reliability: Reliability, config: TimerConfig, _now: Instant) -> Self {
        Self {
            state: ServerNonInviteState::Trying,
            reliability,
            config,
            last_response: None,
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
        match self.state {
            ServerNonInviteState::Trying | ServerNonInviteState::Proceeding => {
                self.transmits.push_back(response.clone());
                self.last_response = Some(response);
                if class == StatusClass::Provisional {
                    self.state = ServerNonInviteState::Proceeding;
                } else {
                    self.state = ServerNonInviteState::Completed;
                    let j = self.config.timer_j(self.reliability);
                    if j.is_zero() {
                        self.terminate();
                    } else {
                        self.timers.set(TimerName::J, now, j);
                    }
                }
                Ok(())
            }
            state => Err(TransactionError::InvalidState {
                status,
                state: state.name(),
            }),
        }
    }

    /// A retransmission of the request arrived (matched by branch, §17.2.3).
    pub fn handle_request_retransmit(&mut self, _now: Instant) {
        if matches!(
            self.state,
            ServerNonInviteState::Proceeding | ServerNonInviteState::Completed
        ) {
            if let Some(r) = &self.last_response {
                self.transmits.push_back(r.clone());
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (name, at) in self.timers.expired(now) {
            if self.timers.take_if(name, at)
                && name == TimerName::J
                && self.state == ServerNonInviteState::Completed
            {
                self.terminate();
            }
        }
    }

    /// The caller could not send a response (§17.2.4).
    pub fn handle_transport_error(&mut self) {
        if self.state != ServerNonInviteState::Terminated {
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

    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerNonInviteState::Terminated
    }

    fn terminate(&mut self) {
        if self.state == ServerNonInviteState::Terminated {
            return;
        }
        self.state = ServerNonInviteState::Terminated;
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
    const OK: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";

    fn start(d: &Driver, rel: Reliability, cfg: TimerConfig) -> Transaction {
        ServerNonInvite::new(rel, cfg, d.now).into()
    }

    fn inner(t: &mut Transaction) -> &mut ServerNonInvite {
        match t {
            Transaction::ServerNonInvite(s) => s,
            _ => unreachable!("test builds a server non-INVITE"),
        }
    }

    #[test]
    fn retransmits_answered_with_last_response_then_timer_j() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        // Trying: nothing to resend.
        inner(&mut t).handle_request_retransmit(d.now);
        d.drain(&mut t);
        assert!(d.sent.is_empty());
        let now = d.set_now(ms(100));
        inner(&mut t)
            .send_response(100, Bytes::from_static(TRYING), now)
            .unwrap();
        d.drain(&mut t);
        assert_eq!(inner(&mut t).state(), ServerNonInviteState::Proceeding);
        let now = d.set_now(ms(500));
        inner(&mut t).handle_request_retransmit(now);
        d.drain(&mut t);
        let now = d.set_now(ms(1000));
        inner(&mut t)
            .send_response(200, Bytes::from_static(OK), now)
            .unwrap();
        assert_eq!(inner(&mut t).state(), ServerNonInviteState::Completed);
        d.drain(&mut t);
        let now = d.set_now(ms(1500));
        inner(&mut t).handle_request_retransmit(now);
        d.drain(&mut t);
        assert_eq!(d.sent_payloads(), vec![TRYING, TRYING, OK, OK]);
        assert_eq!(d.send_times_ms(), vec![100, 500, 1000, 1500]);
        // No second final.
        assert!(inner(&mut t).send_response(404, Bytes::new(), now).is_err());
        d.run(&mut t);
        // J = 64*T1 after the final.
        assert_eq!(d.events_ms(), vec![(33_000, TransactionEvent::Terminated)]);
        assert_eq!(d.sent.len(), 4);
    }

    #[test]
    fn reliable_final_terminates_at_once() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Reliable, TimerConfig::default());
        inner(&mut t)
            .send_response(200, Bytes::from_static(OK), d.now)
            .unwrap();
        d.drain(&mut t);
        assert_eq!(d.sent_payloads(), vec![OK]);
        assert_eq!(d.events_ms(), vec![(0, TransactionEvent::Terminated)]);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn configurable_t1_rescales_j() {
        let mut d = Driver::new();
        let cfg = TimerConfig {
            t1: ms(100),
            ..TimerConfig::default()
        };
        let mut t = start(&d, Reliability::Unreliable, cfg);
        inner(&mut t)
            .send_response(486, Bytes::new(), d.now)
            .unwrap();
        d.run(&mut t);
        assert_eq!(d.events_ms(), vec![(6_400, TransactionEvent::Terminated)]);
    }

    #[test]
    fn transport_error_terminates() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        inner(&mut t)
            .send_response(200, Bytes::from_static(OK), d.now)
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
        assert_eq!(t.poll_timeout(), None);
    }
}
