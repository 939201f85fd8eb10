//! INVITE client transaction: RFC 3261 §17.1.1 as updated by RFC 6026 §7.2 (Accepted state,
//! Timer M), sans-IO.
//!
//! It retransmits the serialized INVITE (Timer A, unreliable only), times out (Timer B), sends
//! and re-sends the ACK for a 300-699 final (built once by the caller's closure, §17.1.1.3),
//! and tells the caller which responses go up to the TU. It never parses messages, never
//! builds the ACK for a 2xx (that belongs to the TU/dialog, §13.2.2.4), never sends CANCEL
//! (its own non-INVITE transaction, §9.1), never reads a clock or touches a socket.
//!
//! # LIFECYCLE
//! - Calling: INVITE sent; Timer A (unreliable, T1 doubling without cap), Timer B (64*T1).
//!   - 1xx -> Proceeding (A and B stopped), to TU.
//!   - 2xx -> Accepted (Timer M = 64*T1), to TU.
//!   - 300-699 -> ACK built and sent, Completed (Timer D), to TU.
//!   - Timer B -> `Timeout`, Terminated. Transport error -> `TransportError`, Terminated.
//! - Proceeding: 1xx -> to TU; 2xx and 300-699 as in Calling.
//! - Completed: 300-699 retransmission -> ACK re-sent, absorbed. Timer D (>=32 s unreliable,
//!   0 reliable) -> Terminated. Transport error -> `TransportError`, Terminated.
//! - Accepted: every 2xx (retransmissions, other forks) -> to TU, so the TU re-ACKs.
//!   Timer M -> Terminated.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timers::{floor, TimerConfig, TimerName, Timers};
use super::{Deliver, Reliability, StatusClass, TransactionEvent};

/// States of [`ClientInvite`] (RFC 3261 Figure 5, RFC 6026 Figure 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

/// An INVITE client transaction. See the module docs for the lifecycle.
#[derive(Debug)]
pub struct ClientInvite {
    state: ClientInviteState,
    reliability: Reliability,
    config: TimerConfig,
    request: Bytes,
    /// ACK for the non-2xx final, built once and re-sent for each final retransmission.
    ack: Option<Bytes>,
    /// Current Timer A interval.
    timer_a_interval: Duration,
    timers: Timers,
    transmits: VecDeque<Bytes>,
    events: VecDeque<TransactionEvent>,
}

impl ClientInvite {
    /// Starts the transaction in Calling: queues the first transmission of `request`, arms
    /// Timer A (unreliable only) and Timer B (§17.1.1.2).
    pub fn new(
        request: Bytes,
        reliability: Reliability,
        config: TimerConfig,
        now: Instant,
    ) -> Self {
        let mut timers = Timers::default();
        let timer_a_interval = config.retransmit_initial();
        if reliability == Reliability::Unreliable {
            timers.set(TimerName::A, now, timer_a_interval);
        }
        timers.set(TimerName::B, now, config.timer_b());
        Self {
            state: ClientInviteState::Calling,
            reliability,
            config,
            transmits: VecDeque::from([request.clone()]),
            request,
            ack: None,
            timer_a_interval,
            timers,
            events: VecDeque::new(),
        }
    }

    /// Feeds a response matched to this transaction. `build_ack` is called at most once, for
    /// the first 300-699 final, and must return the serialized ACK (§17.1.1.3).
    pub fn handle_response(
        &mut self,
        status: u16,
        now: Instant,
        build_ack: impl FnOnce() -> Bytes,
    ) -> Deliver {
        let Some(class) = StatusClass::of(status) else {
            return Deliver::Absorb;
        };
        match (self.state, class) {
            (
                ClientInviteState::Calling | ClientInviteState::Proceeding,
                StatusClass::Provisional,
            ) => {
                // §17.1.1.2: a provisional stops retransmissions; Timer B only guards Calling.
                self.state = ClientInviteState::Proceeding;
                self.timers.stop(TimerName::A);
                self.timers.stop(TimerName::B);
                Deliver::ToTu
            }
            (ClientInviteState::Calling | ClientInviteState::Proceeding, StatusClass::Success) => {
                // RFC 6026 §7.2: stay around in Accepted so 2xx retransmissions (and 2xx from
                // other forks) still reach the TU, which ACKs them.
                self.state = ClientInviteState::Accepted;
                self.timers.stop_all();
                self.timers.set(TimerName::M, now, self.config.timer_m());
                Deliver::ToTu
            }
            (ClientInviteState::Calling | ClientInviteState::Proceeding, StatusClass::Failure) => {
                let ack = build_ack();
                self.transmits.push_back(ack.clone());
                self.ack = Some(ack);
                self.state = ClientInviteState::Completed;
                self.timers.stop_all();
                let d = self.config.timer_d(self.reliability);
                if d.is_zero() {
                    self.terminate();
                } else {
                    self.timers.set(TimerName::D, now, d);
                }
                Deliver::ToTu
            }
            (ClientInviteState::Completed, StatusClass::Failure) => {
                // §17.1.1.2: the server did not get our ACK; re-send it, do not bother the TU.
                if let Some(ack) = &self.ack {
                    self.transmits.push_back(ack.clone());
                }
                Deliver::Absorb
            }
            (ClientInviteState::Accepted, StatusClass::Success) => Deliver::ToTu,
            _ => Deliver::Absorb,
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (name, at) in self.timers.expired(now) {
            if !self.timers.take_if(name, at) {
                continue;
            }
            match (name, self.state) {
                (TimerName::A, ClientInviteState::Calling) => {
                    // §17.1.1.2: retransmit and double, with no T2 cap for INVITE.
                    self.transmits.push_back(self.request.clone());
                    self.timer_a_interval = floor(self.timer_a_interval.saturating_mul(2));
                    self.timers.set(TimerName::A, now, self.timer_a_interval);
                }
                (TimerName::B, ClientInviteState::Calling) => {
                    self.events.push_back(TransactionEvent::Timeout);
                    self.terminate();
                }
                (TimerName::D, ClientInviteState::Completed)
                | (TimerName::M, ClientInviteState::Accepted) => self.terminate(),
                _ => {}
            }
        }
    }

    /// The caller could not send the INVITE or ACK (§17.1.4). In Accepted the transaction
    /// sends nothing, so the report is ignored there.
    pub fn handle_transport_error(&mut self) {
        match self.state {
            ClientInviteState::Calling
            | ClientInviteState::Proceeding
            | ClientInviteState::Completed => {
                self.events.push_back(TransactionEvent::TransportError);
                self.terminate();
            }
            ClientInviteState::Accepted | ClientInviteState::Terminated => {}
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

    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// Whether a provisional was received and no final yet: the TU may CANCEL only now
    /// (§9.1).
    pub fn is_proceeding(&self) -> bool {
        self.state == ClientInviteState::Proceeding
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientInviteState::Terminated
    }

    fn terminate(&mut self) {
        if self.state == ClientInviteState::Terminated {
            return;
        }
        self.state = ClientInviteState::Terminated;
        self.timers.stop_all();
        self.events.push_back(TransactionEvent::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::test_driver::{ms, Driver};
    use crate::sip::transaction::Transaction;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n";
    const ACK: &[u8] = b"ACK sip:bob@example.com SIP/2.0\r\n\r\n";

    fn start(d: &Driver, rel: Reliability, cfg: TimerConfig) -> Transaction {
        ClientInvite::new(Bytes::from_static(INVITE), rel, cfg, d.now).into()
    }

    fn inner(t: &mut Transaction) -> &mut ClientInvite {
        match t {
            Transaction::ClientInvite(c) => c,
            _ => unreachable!("test builds a client INVITE"),
        }
    }

    #[test]
    fn udp_no_answer_retransmits_then_timer_b() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        d.run(&mut t);
        assert_eq!(
            d.send_times_ms(),
            vec![0, 500, 1500, 3500, 7500, 15500, 31500]
        );
        assert!(d.sent_payloads().iter().all(|p| *p == INVITE));
        assert_eq!(
            d.events_ms(),
            vec![
                (32000, TransactionEvent::Timeout),
                (32000, TransactionEvent::Terminated)
            ]
        );
        assert!(t.is_terminated());
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn reliable_no_answer_sends_once_then_timer_b() {
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
    fn late_provisional_stops_retransmits_and_final_retransmission_is_absorbed() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        // Initial send + 2 retransmits (0.5 s, 1.5 s), then the 100 arrives at 2 s.
        d.advance_to(&mut t, ms(2000));
        assert_eq!(d.send_times_ms(), vec![0, 500, 1500]);
        let now = d.set_now(ms(2000));
        assert_eq!(
            inner(&mut t).handle_response(100, now, || unreachable!("no ACK for 1xx")),
            Deliver::ToTu
        );
        assert!(inner(&mut t).is_proceeding());
        assert_eq!(inner(&mut t).state(), ClientInviteState::Proceeding);
        // No more retransmits and no Timer B while Proceeding.
        assert_eq!(t.poll_timeout(), None);
        d.advance_to(&mut t, ms(60_000));
        assert_eq!(d.sent.len(), 3);
        assert!(d.events.is_empty());

        // 486 arrives at 60 s: ACK built once and sent.
        let now = d.set_now(ms(60_000));
        let mut builds = 0;
        let r = inner(&mut t).handle_response(486, now, || {
            builds += 1;
            Bytes::from_static(ACK)
        });
        assert_eq!(r, Deliver::ToTu);
        assert_eq!(builds, 1);
        assert_eq!(inner(&mut t).state(), ClientInviteState::Completed);
        d.drain(&mut t);
        assert_eq!(d.sent.last().map(|(_, b)| b.as_ref()), Some(ACK));

        // The server did not see the ACK and retransmits the 486 at 61 s: ACK re-sent,
        // response absorbed, builder not called again.
        let now = d.set_now(ms(61_000));
        let r = inner(&mut t).handle_response(486, now, || unreachable!("ACK built once"));
        assert_eq!(r, Deliver::Absorb);
        d.drain(&mut t);
        let acks: Vec<u128> = d
            .sent
            .iter()
            .filter(|(_, b)| b.as_ref() == ACK)
            .map(|(at, _)| at.as_millis())
            .collect();
        assert_eq!(acks, vec![60_000, 61_000]);

        // Timer D: 32 s after entering Completed.
        d.run(&mut t);
        assert_eq!(d.events_ms(), vec![(92_000, TransactionEvent::Terminated)]);
        assert_eq!(inner(&mut t).state(), ClientInviteState::Terminated);
    }

    #[test]
    fn reliable_final_acks_and_terminates_at_once() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Reliable, TimerConfig::default());
        let now = d.set_now(ms(100));
        let r = inner(&mut t).handle_response(503, now, || Bytes::from_static(ACK));
        assert_eq!(r, Deliver::ToTu);
        d.drain(&mut t);
        assert_eq!(d.sent_payloads(), vec![INVITE, ACK]);
        assert_eq!(d.events_ms(), vec![(100, TransactionEvent::Terminated)]);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn success_goes_to_accepted_and_every_2xx_reaches_tu_until_timer_m() {
        let mut d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        d.advance_to(&mut t, ms(700));
        let now = d.set_now(ms(700));
        assert_eq!(
            inner(&mut t).handle_response(200, now, || unreachable!("TU ACKs 2xx")),
            Deliver::ToTu
        );
        assert_eq!(inner(&mut t).state(), ClientInviteState::Accepted);
        // Retransmitted 2xx (our ACK got lost) and a 2xx from another fork: both up.
        for at in [1_200, 5_000] {
            let now = d.set_now(ms(at));
            assert_eq!(
                inner(&mut t).handle_response(200, now, || unreachable!()),
                Deliver::ToTu
            );
        }
        // Stray provisional / failure after 2xx: absorbed.
        assert_eq!(
            inner(&mut t).handle_response(180, now, || unreachable!()),
            Deliver::Absorb
        );
        assert_eq!(
            inner(&mut t).handle_response(487, now, || unreachable!()),
            Deliver::Absorb
        );
        d.run(&mut t);
        // Only the initial send and the 0.5 s retransmit; nothing after the 2xx.
        assert_eq!(d.send_times_ms(), vec![0, 500]);
        assert_eq!(d.events_ms(), vec![(32_700, TransactionEvent::Terminated)]);
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
        assert_eq!(t.poll_timeout(), None);
        // A second report after termination changes nothing.
        t.handle_transport_error();
        assert_eq!(t.poll_event(), None);
    }

    #[test]
    fn invalid_status_is_absorbed_without_state_change() {
        let d = Driver::new();
        let mut t = start(&d, Reliability::Unreliable, TimerConfig::default());
        for s in [0, 99, 700, u16::MAX] {
            assert_eq!(
                inner(&mut t).handle_response(s, d.now, || unreachable!()),
                Deliver::Absorb
            );
        }
        assert_eq!(inner(&mut t).state(), ClientInviteState::Calling);
    }

    #[test]
    fn configurable_t1_rescales_a_and_b() {
        let mut d = Driver::new();
        let cfg = TimerConfig {
            t1: ms(100),
            ..TimerConfig::default()
        };
        let mut t = start(&d, Reliability::Unreliable, cfg);
        d.run(&mut t);
        assert_eq!(d.send_times_ms(), vec![0, 100, 300, 700, 1500, 3100, 6300]);
        assert_eq!(
            d.events_ms(),
            vec![
                (6400, TransactionEvent::Timeout),
                (6400, TransactionEvent::Terminated)
            ]
        );
    }
}
