//! Liveness of a call's legs: silence makes a leg suspect, never dead.
//!
//! The relay reports a leg that sent neither RTP nor RTCP for its media timeout
//! (`media.ai_timeout` on the AI agent's leg, `media.timeout` on the carrier's), on hold
//! too. That only starts a check, chosen per target (`liveness`), that cannot harm a healthy
//! dialog:
//!
//! - `options`: an OPTIONS outside the dialog to the peer's Contact, on the dialog's own flow,
//!   plus an empty datagram to its media port (drawing ICMP port unreachable if nothing
//!   listens). Any answer means the user agent is alive. No answer within
//!   `media.check_timeout` confirms the leg gone only where the peer is known to answer
//!   OPTIONS: it answered one earlier in this call, its target's legs answered checks
//!   before, or its address answers the health pings. Otherwise holdfast cannot tell a dead
//!   agent from one that ignores OPTIONS, says so once, and keeps the call.
//! - `in-dialog-options`: an OPTIONS inside the dialog; 481 or no answer means it is gone.
//! - `refresh`: a session refresh (RFC 4028), whose 481, 408 or lack of answer ends the
//!   session as any failed refresh does.
//! - `ping` (WebSocket legs): a WebSocket ping; no pong means the connection is gone.
//!
//! Only a confirmed failure acts: a failed check, ICMP port unreachable from the AI leg's
//! media (at any time after the answer), a transport error. On the AI leg of an inbound call
//! that re-routes the call; on the carrier's leg (or an outbound call's agent leg, which
//! cannot be re-routed) it ends the call. ICMP from a carrier's media is only logged.
//!
//! Also here: the AI leg a re-route keeps while it replaces it (make before break), and
//! stopping a leg's transactions when its peer is gone or the call ends.
//!
//! Like the rest of the core this never touches a socket or the clock.
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::{CallRef, CallTimer, Core, Purpose, SideKey, ACCEPT};
use crate::ai::control::AiCommand;
use crate::b2bua::call::{CallState, Leg, RerouteTrigger, Side, WsLeg};
use crate::b2bua::msg::Req;
use crate::config::Liveness;
use crate::health::{AttemptOutcome, Destination};
use crate::routing::TargetId;
use crate::sip::transaction::{ClientInviteState, ClientNonInviteState, Transaction};

/// What holdfast knows of one leg's liveness.
#[derive(Clone, Debug, Default)]
pub(in crate::b2bua) struct LegLiveness {
    /// A check in flight since then.
    pub checking: Option<Instant>,
    /// The peer answered a check during this call: one it leaves unanswered means it is gone.
    pub answered: bool,
    /// "Cannot confirm" was said for this leg (once per call).
    pub unconfirmed_said: bool,
}

/// The AI leg a re-route is replacing while it still works: it keeps the call until the new
/// provider answers, and gets it back when none does.
#[derive(Clone, Debug)]
pub(in crate::b2bua) struct KeptLeg {
    pub b: Option<Leg>,
    pub ws: Option<WsLeg>,
    /// The provider it belongs to.
    pub pinned: String,
    pub b_ack: Option<Bytes>,
}

/// The `leg` label of a leg kind ("carrier" or "AI agent").
fn leg_label(kind: &str) -> &'static str {
    if kind == "carrier" {
        "carrier"
    } else {
        "ai"
    }
}

/// What happens to a transaction that must stop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Still retransmitting its request, unanswered: dropped (nothing more is sent).
    Drop,
    /// An INVITE with a provisional: CANCELled; it stays to acknowledge the 487.
    Cancel,
    /// Already answered: it finishes on its own, its outcome ignored.
    Forget,
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl Core {
    /// The target on leg `side` of call `c` and how its silence is checked.
    fn leg_target(&self, c: CallRef, side: Side) -> Option<(TargetId, Liveness)> {
        let e = self.calls.get(&c)?;
        let id = match side {
            Side::A => e.call.origin.clone(),
            Side::B => e.call.pinned.clone()?,
        };
        let liveness = match self.config.target(&id) {
            Some(t) => t.liveness,
            // A reload removed it: the defaults for what the leg faces.
            None if side == Side::B && e.call.ws.is_some() => Liveness::Ping,
            None if e.call.is_ai_leg(side) => Liveness::Options,
            None => Liveness::Refresh,
        };
        Some((TargetId::from(id.as_str()), liveness))
    }

    /// Leg `side` of call `c` has been silent (`why`): check on it, unless a check is in
    /// flight already. Only a confirmed call is checked: before the answer silence is
    /// normal, while re-routing or ending there is nothing to keep.
    pub(super) fn start_check(&mut self, c: CallRef, side: Side, why: &str, now: Instant) {
        let Some(e) = self.calls.get(&c) else {
            return;
        };
        if e.call.state != CallState::Confirmed || e.liveness[idx(side)].checking.is_some() {
            return;
        }
        let Some((target, kind)) = self.leg_target(c, side) else {
            return;
        };
        let name = e.call.id.clone();
        let what = self.leg_kind(c, side);
        let timeout = self.config.media.check_timeout;
        match kind {
            Liveness::Off => {
                debug!(call = %name, leg = ?side, target_id = %target, "{what} silent ({why}); liveness checks are off");
                return;
            }
            Liveness::Ping => {
                let Some(leg) = e
                    .call
                    .ws
                    .as_ref()
                    .filter(|w| w.media.is_some())
                    .map(|w| w.leg)
                else {
                    return;
                };
                self.ai_out.push_back(AiCommand::Check { leg, timeout });
                // The shell answers within `timeout`; this deadline only covers a shell
                // that never does.
                self.set_deadline(c, CallTimer::Check(SideKey::from(side)), now + timeout * 2);
            }
            Liveness::Options | Liveness::InDialogOptions => {
                if !self.send_check(c, side, kind == Liveness::InDialogOptions, now) {
                    return;
                }
                self.with_media(c, |m, _, out| m.probe(side, out));
                self.set_deadline(c, CallTimer::Check(SideKey::from(side)), now + timeout);
            }
            Liveness::Refresh => {
                if self.calls.get(&c).is_some_and(|e| e.reinvite_in_progress) {
                    return; // a re-INVITE or UPDATE in flight is itself the check
                }
                self.with_media(c, |m, _, out| m.probe(side, out));
                self.send_refresh(c, side, now);
            }
        }
        self.metrics
            .liveness_checks
            .inc((leg_label(what), "started"));
        debug!(call = %name, leg = ?side, target_id = %target, check = kind.as_str(), "{what} silent ({why}); checking it");
        if let Some(e) = self.calls.get_mut(&c) {
            e.liveness[idx(side)].checking = Some(now);
        }
    }

    /// Sends the OPTIONS of a liveness check on leg `side`: inside the dialog, or outside it
    /// to the peer's Contact on the dialog's own flow (so it reaches the same peer, whatever
    /// DNS or health say now). `false` when the leg has no dialog.
    fn send_check(&mut self, c: CallRef, side: Side, in_dialog: bool, now: Instant) -> bool {
        let Some(mut leg) = self.leg(c, side).cloned() else {
            return false;
        };
        let purpose = Purpose::Check {
            call: c,
            side,
            in_dialog,
        };
        let flow = leg.flow;
        if in_dialog {
            let headers = vec![("Accept".to_string(), ACCEPT.to_string())];
            self.send_in_dialog(&mut leg, "OPTIONS", headers, None, purpose, flow, now);
            if let Some(l) = self.leg_mut(c, side) {
                l.local_cseq = leg.local_cseq;
            }
            return true;
        }
        let uri = leg.remote_target.trim_matches(['<', '>']).to_string();
        self.send_options(uri, leg.route_set.clone(), flow, purpose, now);
        true
    }

    /// The check of leg `side` is over, whatever it found: its OPTIONS is no longer
    /// retransmitted.
    pub(super) fn check_done(&mut self, c: CallRef, side: Side) {
        if let Some(e) = self.calls.get_mut(&c) {
            e.liveness[idx(side)].checking = None;
            e.deadlines.remove(&CallTimer::Check(SideKey::from(side)));
        }
        let done: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, (_, e))| {
                matches!(e.purpose, Purpose::Check { call, side: s, .. } if call == c && s == side)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some((key, _)) = self.clients.remove(&id) {
                self.client_ids.remove(&key);
            }
        }
    }

    /// The OPTIONS of a check got a final response.
    pub(super) fn check_answered(
        &mut self,
        c: CallRef,
        side: Side,
        in_dialog: bool,
        status: u16,
        reason: &str,
        now: Instant,
    ) {
        // Inside the dialog, 481 says the dialog is gone (§12.2.2) and 408 that nothing
        // answered; outside it, any answer comes from a live user agent, but a proxy's 408
        // says nothing answered behind it.
        if in_dialog && (status == 481 || status == 408) {
            return self.check_failed(
                c,
                side,
                &format!("its in-dialog OPTIONS was answered {status} {reason}"),
                now,
            );
        }
        if status == 408 {
            return self.check_unanswered(c, side, now);
        }
        self.check_alive(c, side, &format!("answered OPTIONS with {status}"));
    }

    /// The check found the peer alive: the leg stays as it is.
    pub(super) fn check_alive(&mut self, c: CallRef, side: Side, how: &str) {
        let current = self
            .calls
            .get(&c)
            .is_some_and(|e| e.liveness[idx(side)].checking.is_some());
        self.check_done(c, side);
        let Some(e) = self.calls.get_mut(&c) else {
            return;
        };
        e.liveness[idx(side)].answered = true;
        let name = e.call.id.clone();
        if let Some((target, _)) = self.leg_target(c, side) {
            self.check_answered.insert(target);
        }
        if current {
            let what = self.leg_kind(c, side);
            self.metrics.liveness_checks.inc((leg_label(what), "alive"));
            debug!(call = %name, leg = ?side, "{what} silent but alive ({how}); kept");
        }
    }

    /// No answer to the check of leg `side` in time.
    pub(super) fn check_unanswered(&mut self, c: CallRef, side: Side, now: Instant) {
        let Some(e) = self.calls.get(&c) else {
            return;
        };
        if e.liveness[idx(side)].checking.is_none() {
            return;
        }
        let Some((target, kind)) = self.leg_target(c, side) else {
            return;
        };
        let timeout = self.config.media.check_timeout;
        let known = match kind {
            // Every WebSocket peer answers a ping (RFC 6455 §5.5.2); a dialog's peer answers
            // a request inside it (RFC 3261 §12.2.2).
            Liveness::Ping | Liveness::InDialogOptions => true,
            _ => {
                let remote = self.leg(c, side).map(|l| l.flow.remote);
                e.liveness[idx(side)].answered
                    || self.check_answered.contains(&target)
                    || remote.is_some_and(|r| self.answers_pings(&target, r, now))
            }
        };
        let what = self.leg_kind(c, side);
        let detail = match kind {
            Liveness::Ping => format!("no pong to its WebSocket ping in {timeout:?}"),
            _ => format!("no answer to its OPTIONS in {timeout:?}"),
        };
        if known {
            return self.check_failed(c, side, &detail, now);
        }
        self.check_done(c, side);
        self.metrics
            .liveness_checks
            .inc((leg_label(what), "unconfirmed"));
        let Some(e) = self.calls.get_mut(&c) else {
            return;
        };
        if !std::mem::replace(&mut e.liveness[idx(side)].unconfirmed_said, true) {
            warn!(
                call = %e.call.id, leg = ?side, target_id = %target,
                "{what} silent and {detail}, but {target} has never answered an OPTIONS: \
                 silence alone cannot tell it gone, so the call stays (liveness: \
                 in-dialog-options or refresh check its dialog instead)"
            );
        }
    }

    /// Whether `target`'s address `remote` answers the health pings (OPTIONS).
    fn answers_pings(&self, target: &TargetId, remote: SocketAddr, now: Instant) -> bool {
        self.health.status(target, now).is_some_and(|s| {
            s.ping
                && s.addresses
                    .iter()
                    .any(|a| a.dest.addr == remote && a.last_rtt.is_some())
        })
    }

    /// The check of leg `side` failed: a confirmed failure.
    pub(super) fn check_failed(&mut self, c: CallRef, side: Side, detail: &str, now: Instant) {
        let current = self
            .calls
            .get(&c)
            .is_some_and(|e| e.liveness[idx(side)].checking.is_some());
        self.check_done(c, side);
        if !current {
            return;
        }
        let what = self.leg_kind(c, side);
        self.metrics
            .liveness_checks
            .inc((leg_label(what), "failed"));
        let detail = format!("silent, and {detail}");
        self.confirmed_failure(c, side, RerouteTrigger::Liveness, detail, now);
    }

    /// ICMP port unreachable from leg `side`'s media address.
    pub(super) fn on_media_unreachable(
        &mut self,
        c: CallRef,
        side: Side,
        addr: SocketAddr,
        now: Instant,
    ) {
        let Some(e) = self.calls.get(&c) else {
            return;
        };
        let detail = format!("ICMP port unreachable from its media address {addr}");
        if e.call.is_ai_leg(side) {
            // Nothing listens where the AI agent's media should be: it is gone, whenever
            // that is noticed after the answer.
            return self.confirmed_failure(c, side, RerouteTrigger::MediaUnreachable, detail, now);
        }
        // A carrier's media server may send from one port and never listen on the one
        // ICMP came back from, or sit behind a firewall that answers for it: that says
        // nothing about its call. Its silence, if any, is what gets checked.
        let _ = (detail, now);
    }

    /// Leg `side` of call `c` is confirmed gone (`trigger`, `detail`): the AI leg of an
    /// inbound call is re-routed; any other leg ends the call. Before the answer nothing is
    /// done (an early-media peer may not listen yet); between the answer and the caller's
    /// ACK the re-route waits for the ACK.
    pub(super) fn confirmed_failure(
        &mut self,
        c: CallRef,
        side: Side,
        trigger: RerouteTrigger,
        detail: String,
        now: Instant,
    ) {
        let Some(e) = self.calls.get_mut(&c) else {
            return;
        };
        let ai = e.call.is_ai_leg(side);
        match e.call.state {
            CallState::Routing | CallState::Early | CallState::Ending => return,
            CallState::Answered => {
                if ai && e.early_failure.is_none() {
                    e.early_failure = Some((trigger, detail));
                }
                return;
            }
            CallState::Rerouting => {
                if side == Side::B && e.kept.is_some() {
                    self.kept_leg_gone(c, &detail, true, now);
                }
                return;
            }
            CallState::Confirmed => {}
        }
        if ai && self.reroute(c, trigger, detail.clone(), true, now) {
            return;
        }
        let who = self.leg_kind(c, side);
        info!(call = %self.call_name(c), leg = ?side, "{who} gone: {detail}");
        self.end_call(c, &format!("{who} gone: {detail}"), None, now);
    }

    /// Whether `call_id` is the dialog of the AI leg call `c`'s re-route keeps.
    pub(super) fn is_kept_dialog(&self, c: CallRef, call_id: &str) -> bool {
        self.calls.get(&c).is_some_and(|e| {
            e.kept
                .as_ref()
                .and_then(|k| k.b.as_ref())
                .is_some_and(|b| b.call_id == call_id)
        })
    }

    /// A request from the kept AI leg while its replacement is being set up.
    pub(super) fn on_kept_request(&mut self, c: CallRef, sid: u64, req: &Req, now: Instant) {
        match req.method.as_str() {
            "BYE" => {
                self.respond(sid, 200, None, vec![], None, now);
                if let Some(cause) = super::reroute::failure_cause(&req.passthrough) {
                    // It failed: the re-route goes on without it.
                    let why = format!("BYE with Reason: {cause}");
                    return self.kept_leg_gone(c, &why, false, now);
                }
                // The agent hung up: the call is over, whatever the re-route would bring.
                if let Some(e) = self.calls.get_mut(&c) {
                    if let Some(k) = e.kept.take() {
                        if let Some(b) = k.b {
                            self.dialogs.remove(&(b.call_id, b.local_tag));
                        }
                    }
                }
                self.end_call(c, "BYE from callee", Some(Side::B), now);
            }
            "OPTIONS" => {
                let h = self.capabilities();
                self.respond(sid, 200, None, h, None, now);
            }
            "INVITE" | "UPDATE" => self.respond(sid, 491, None, vec![], None, now),
            _ => self.respond(sid, 480, Some("AI Leg Re-routing"), vec![], None, now),
        }
    }

    /// The kept AI leg is confirmed gone while its replacement is set up: it is cut off now
    /// (BYE unless it sent one, its audio no longer relayed, gap audio for the caller) and
    /// the re-route goes on; with no provider left the call then ends.
    pub(super) fn kept_leg_gone(&mut self, c: CallRef, why: &str, bye: bool, now: Instant) {
        let Some(k) = self.calls.get_mut(&c).and_then(|e| e.kept.clone()) else {
            return;
        };
        warn!(call = %self.call_name(c), provider = %k.pinned, "the AI leg being replaced is gone too ({why})");
        let dest = match (&k.b, &k.ws) {
            (Some(b), _) => Some(Destination {
                addr: b.flow.remote,
                transport: b.flow.transport,
            }),
            (None, Some(ws)) => self
                .calls
                .get(&c)
                .and_then(|e| e.call.attempts.get(ws.attempt))
                .map(|a| super::attempt_target(a).1),
            (None, None) => None,
        };
        if let Some(dest) = dest {
            let target = TargetId::from(k.pinned.as_str());
            self.health
                .handle_attempt(&target, &dest, AttemptOutcome::Timeout, now);
        }
        self.retire_kept(c, &format!("re-routed: {why}"), bye, now);
        let gap_audio = self.config.ai.gap_audio;
        self.with_media(c, |m, _, out| {
            m.mute(Side::B, true, out);
            if gap_audio.is_some() {
                m.fill(Side::A, gap_audio, out);
            }
        });
        if let Some(r) = self
            .calls
            .get_mut(&c)
            .and_then(|e| e.call.reroutes.last_mut())
        {
            r.confirmed = true;
            r.detail = format!("{}; then {why}", r.detail);
        }
    }

    /// Lets go of the AI leg call `c`'s re-route kept: BYE (when `bye`) or WebSocket close,
    /// its dialog forgotten. Nothing when none is kept.
    pub(super) fn retire_kept(&mut self, c: CallRef, why: &str, bye: bool, now: Instant) {
        let Some(k) = self.calls.get_mut(&c).and_then(|e| e.kept.take()) else {
            return;
        };
        if let Some(mut b) = k.b {
            self.dialogs
                .remove(&(b.call_id.clone(), b.local_tag.clone()));
            if bye {
                let flow = b.flow;
                self.send_in_dialog(
                    &mut b,
                    "BYE",
                    vec![super::reason_header(why)],
                    None,
                    Purpose::Ignore,
                    flow,
                    now,
                );
            }
        }
        if let Some(ws) = k.ws {
            self.ai_legs.remove(&ws.leg);
            self.ai_out.push_back(AiCommand::Close {
                leg: ws.leg,
                why: why.to_string(),
            });
        }
    }

    /// Stops the client transactions call `c` still runs toward `side` (both legs when
    /// `None`): relayed requests, refreshes and checks, whose peer is gone or whose call is
    /// over. Nothing more is retransmitted to it (an INVITE that got a provisional is
    /// CANCELled, and its transaction stays to acknowledge the 487); the request a relayed
    /// one came from is answered `status`. Returns how many relayed requests were answered.
    pub(super) fn stop_transactions(
        &mut self,
        c: CallRef,
        side: Option<Side>,
        (status, reason): (u16, &'static str),
        now: Instant,
    ) -> usize {
        let mut stop = Vec::new();
        let mut answer = Vec::new();
        for (&id, (_, e)) in &self.clients {
            let (call, to) = match &e.purpose {
                Purpose::Relay { call, to, server } => {
                    if *call == c && side.is_none_or(|s| s == *to) {
                        answer.push(server.clone());
                    }
                    (*call, *to)
                }
                Purpose::Refresh { call, side } | Purpose::Check { call, side, .. } => {
                    (*call, *side)
                }
                _ => continue,
            };
            if call == c && side.is_none_or(|s| s == to) {
                let fate = match &e.tx {
                    Transaction::ClientInvite(t) => match t.state() {
                        ClientInviteState::Calling => Stop::Drop,
                        ClientInviteState::Proceeding => Stop::Cancel,
                        // Answered: it finishes on its own (and ACKs a non-2xx).
                        _ => Stop::Forget,
                    },
                    Transaction::ClientNonInvite(t) => match t.state() {
                        ClientNonInviteState::Trying | ClientNonInviteState::Proceeding => {
                            Stop::Drop
                        }
                        _ => Stop::Forget,
                    },
                    _ => Stop::Forget,
                };
                stop.push((id, fate));
            }
        }
        for (id, fate) in stop {
            match fate {
                Stop::Drop => {
                    if let Some((key, _)) = self.clients.remove(&id) {
                        self.client_ids.remove(&key);
                    }
                }
                Stop::Cancel | Stop::Forget => {
                    if let Some((_, e)) = self.clients.get_mut(&id) {
                        e.purpose = Purpose::Ignore;
                    }
                    if fate == Stop::Cancel {
                        self.send_cancel(id, now);
                    }
                }
            }
        }
        let n = answer.len();
        for server in answer {
            if let Some(&sid) = self.server_ids.get(&server) {
                self.respond(sid, status, Some(reason), vec![], None, now);
            }
        }
        if let Some(e) = self.calls.get_mut(&c) {
            e.reinvite_in_progress = false;
            for s in [Side::A, Side::B] {
                if side.is_none_or(|x| x == s) {
                    e.liveness[idx(s)].checking = None;
                    e.deadlines.remove(&CallTimer::Check(SideKey::from(s)));
                }
            }
        }
        n
    }
}
