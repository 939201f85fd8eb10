//! Mid-call re-route of the AI leg: when the AI provider of an answered inbound call fails,
//! the carrier leg stays exactly as it is (no re-INVITE, no BYE, nothing it can see) while a
//! new AI leg is set up to the next healthy provider the call's regions allow.
//!
//! Triggers (each calls [`Core::reroute`]), all confirmed failures or a provider at risk,
//! never silence alone (see `liveness.rs`): a BYE from the AI leg with an error cause, a
//! failed re-INVITE/UPDATE/refresh toward it, a failed liveness check after it fell silent,
//! ICMP port unreachable from its media address, a dropped WebSocket, and its provider's
//! OPTIONS health turning down.
//!
//! A leg confirmed gone is cut off at once (break before make: its audio muted, gap audio
//! for the caller). A leg that may still work (health down, a 5xx to a re-offer) keeps the
//! call while the new one is set up (make before break) and gets it back, untouched, when no
//! provider takes it; only a leg confirmed gone with no provider left ends the call.
//!
//! The new leg's INVITE offers the carrier leg's negotiated session anchored on the AI side's
//! existing relay ports, so the carrier's RTP keeps flowing to the same holdfast port and what
//! holdfast sends the carrier stays one stream (same SSRC, sequence and timestamps continued
//! across the gap by the relay's source switch). Attempts reuse the initial routing machinery
//! (attempt and ring timeouts, abandoned INVITEs cancelled or hung up), with every failure
//! moving on to the next provider. A provider that failed mid-call is never tried again for
//! that call. When none is left the call ends cleanly: BYE to the carrier with a Reason.
//!
//! Like the rest of the core this never touches a socket or the clock.
use std::time::{Duration, Instant};
use tracing::{info, warn};

use super::liveness::KeptLeg;
use super::{reason_header, CallRef, CallTimer, Core, Purpose, SideKey, View, ACCEPT};
use crate::ai::control::AiCommand;
use crate::b2bua::call::{CallState, Candidate, Direction, Reroute, RerouteTrigger, Side};
use crate::b2bua::msg::Resp;
use crate::config::NoProvider;
use crate::health::{AttemptOutcome, Destination, State};
use crate::routing::TargetId;

/// Q.850 causes (RFC 3326 `Reason: Q.850;cause=N`) that mean the far end failed rather than
/// hung up: destination out of order, no circuit, network out of order, temporary failure,
/// switching congestion, resource unavailable, recovery on timer expiry, protocol error,
/// interworking.
const Q850_FAILURES: &[u16] = &[27, 34, 38, 41, 42, 47, 102, 111, 127];

/// Whether a BYE's Reason headers say the sender failed (SIP cause 408, 480 or 5xx, or one
/// of [`Q850_FAILURES`]); returns the Reason value that says so. A BYE without one is the
/// agent hanging up, which ends the call.
pub(super) fn failure_cause(headers: &[(String, String)]) -> Option<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Reason"))
        .flat_map(|(_, v)| v.split(',').map(str::trim))
        .find(|v| {
            let Ok(r) = crate::sip::header::Reason::parse(v) else {
                return false;
            };
            match (r.protocol.to_ascii_uppercase().as_str(), r.cause) {
                ("SIP", Some(c)) => c == 408 || c == 480 || (500..600).contains(&c),
                ("Q.850", Some(c)) => Q850_FAILURES.contains(&c),
                _ => false,
            }
        })
        .map(str::to_string)
}

/// Left after the no-provider prompt before the BYE, so its last frames reach the caller.
const PROMPT_TAIL: Duration = Duration::from_millis(300);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    /// Re-routes the AI leg of call `c` after `trigger`. `gone` says the failed leg is
    /// confirmed gone (ICMP, a failed check, its BYE, a dropped WebSocket…): it is cut off
    /// at once and the caller hears gap audio until the new provider's first audio. When it
    /// may still work (its provider's health turned down, it refused a renegotiation with a
    /// 5xx) it keeps the call until a new provider answers, and gets it back when none does.
    /// Returns `false` when the call cannot be re-routed (an outbound call, whose AI leg is
    /// the caller; not confirmed yet; already re-routing or ending): the caller then ends
    /// the call as it otherwise would.
    pub(super) fn reroute(
        &mut self,
        c: CallRef,
        trigger: RerouteTrigger,
        detail: String,
        gone: bool,
        now: Instant,
    ) -> bool {
        let Some(entry) = self.calls.get_mut(&c) else {
            return false;
        };
        if entry.call.direction != Direction::Inbound
            || entry.call.state != CallState::Confirmed
            || entry.call.transfer_to.is_some()
        {
            return false;
        }
        let call = &mut entry.call;
        let old = call.b.take();
        let old_ws = call.ws.take();
        let from = call.pinned.take().unwrap_or_default();
        call.state = CallState::Rerouting;
        call.reroutes.push(Reroute {
            trigger,
            detail: detail.clone(),
            from: from.clone(),
            to: None,
            setup_ms: None,
            gap_ms: None,
            outcome: None,
            confirmed: gone,
        });
        let id = call.id.clone();
        let count = call.reroutes.len();
        let call_attempts = call.attempts.len();
        if entry
            .pending_ack
            .as_ref()
            .is_some_and(|p| p.from == Side::B)
        {
            entry.pending_ack = None;
        }
        let b_ack = entry.b_ack.take();
        entry.b_invite = None;
        entry.reroute_started = Some((now, call_attempts));
        entry.deadlines.remove(&CallTimer::Refresh(SideKey::B));
        entry.deadlines.remove(&CallTimer::Expire(SideKey::B));
        entry.liveness[1] = Default::default();
        self.stats.reroutes += 1;
        self.metrics.reroutes.inc(trigger.as_str());
        if gone {
            warn!(call = %id, provider = %from, trigger = trigger.as_str(), reroute = count, "AI leg failed ({detail}); re-routing");
        } else {
            warn!(call = %id, provider = %from, trigger = trigger.as_str(), reroute = count, "AI leg at risk ({detail}); re-routing, and it keeps the call until another provider answers");
        }
        self.detach_leg(c, Side::B, now);
        // A failed call counts against the provider's breaker, as a failed attempt would; a
        // provider health already took down needs no more.
        let outcome = match trigger {
            RerouteTrigger::Liveness | RerouteTrigger::MediaUnreachable => {
                Some(AttemptOutcome::Timeout)
            }
            RerouteTrigger::Bye | RerouteTrigger::Reinvite | RerouteTrigger::Websocket => {
                Some(AttemptOutcome::ServerError(503))
            }
            RerouteTrigger::HealthDown => None,
        };
        let old_dest = match (&old, &old_ws) {
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
        if let (Some(dest), Some(outcome)) = (old_dest, outcome) {
            self.health
                .handle_attempt(&TargetId::from(from.as_str()), &dest, outcome, now);
        }
        if gone {
            if let Some(mut old) = old {
                self.dialogs
                    .remove(&(old.call_id.clone(), old.local_tag.clone()));
                // Whatever is left of the old provider's session is hung up; it sent its own
                // BYE when that is the trigger.
                if trigger != RerouteTrigger::Bye {
                    let flow = old.flow;
                    let why = format!("re-routed: {detail}");
                    self.send_in_dialog(
                        &mut old,
                        "BYE",
                        vec![reason_header(&why)],
                        None,
                        Purpose::Ignore,
                        flow,
                        now,
                    );
                }
            }
            if let Some(ws) = old_ws {
                self.ai_legs.remove(&ws.leg);
                self.ai_out.push_back(AiCommand::Close {
                    leg: ws.leg,
                    why: format!("re-routed: {detail}"),
                });
            }
        } else if let Some(entry) = self.calls.get_mut(&c) {
            entry.kept = Some(KeptLeg {
                b: old,
                ws: old_ws,
                pinned: from.clone(),
                b_ack,
            });
        }
        self.count_target(c, None);
        // The new provider gets the carrier leg's session on the same relay ports. A leg
        // that is gone is cut off now: what it still sends is no longer relayed, and the
        // caller hears comfort noise (or the configured prompt) until the new provider's
        // first audio, not dead air. A kept leg goes on talking meanwhile.
        let gap_audio = self.config.ai.gap_audio;
        let offer = self
            .with_media(c, |m, _, out| {
                let offer = m.reroute_offer(Side::B, !gone, out);
                if gone && gap_audio.is_some() {
                    m.fill(Side::A, gap_audio, out);
                }
                offer
            })
            .flatten();
        let candidates = self.reroute_candidates(c, now);
        let Some(entry) = self.calls.get_mut(&c) else {
            return true;
        };
        if offer.is_some() {
            entry.call.offer_type = Some(ACCEPT.to_string());
        }
        entry.call.offer = offer;
        entry.call.candidates = candidates;
        entry.call.next_candidate = 0;
        self.next_attempt(c, now);
        true
    }

    /// Providers for a re-route, best first: the rule the call matches now (so a reload's
    /// new providers count) planned on current health, kept to the regions the call was
    /// admitted with, without those that already failed in this call.
    fn reroute_candidates(&mut self, c: CallRef, now: Instant) -> Vec<Candidate> {
        let Some(call) = self.calls.get(&c).map(|e| &e.call) else {
            return Vec::new();
        };
        let origin = TargetId::from(call.origin.as_str());
        let Some(rule) = self
            .routing
            .match_inbound(&origin, &call.callee, &call.caller)
            .cloned()
        else {
            return Vec::new();
        };
        self.plan_in_regions(c, &rule, now)
    }

    /// `rule` planned on current health, kept to the regions call `c` was admitted with,
    /// without the providers that already failed in this call.
    fn plan_in_regions(
        &mut self,
        c: CallRef,
        rule: &crate::config::RouteRule,
        now: Instant,
    ) -> Vec<Candidate> {
        let seed = self.ids.next_u64();
        let view = View {
            health: &self.health,
            targets: &self.targets,
            cordoned: &self.cordoned,
            now,
        };
        let plan = self.routing.plan(rule, &view, seed);
        self.note_plan(&rule.name(), &plan);
        let Some(call) = self.calls.get(&c).map(|e| &e.call) else {
            return Vec::new();
        };
        plan.targets
            .iter()
            .filter(|t| {
                self.config
                    .target(t)
                    .is_some_and(|cfg| call.regions.contains(&cfg.region))
                    && !call.failed_mid_call(t)
            })
            .map(|t| Candidate {
                target: t.to_string(),
                ignore_breaker: plan.overrides_breaker(t),
            })
            .collect()
    }

    /// The transactions still running on leg `side` of call `c` belong to a peer that is
    /// being replaced: their outcome no longer matters and nothing more is retransmitted to
    /// it. A request of the other leg relayed there is answered now (500: the session stays
    /// as it was, RFC 3261 §14.1).
    fn detach_leg(&mut self, c: CallRef, side: Side, now: Instant) {
        let answered = self.stop_transactions(c, Some(side), (500, "AI Leg Re-routing"), now);
        if answered > 0 {
            self.with_media(c, |m, _, out| m.offer_rejected(side.other(), out));
        }
    }

    /// The new provider answered: acknowledge, relay to it, and the call is confirmed again.
    pub(super) fn reroute_answered(
        &mut self,
        c: CallRef,
        attempt: usize,
        resp: Resp,
        now: Instant,
    ) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let (target, dest) = super::attempt_target(&entry.call.attempts[attempt]);
        self.health
            .handle_attempt(&target, &dest, AttemptOutcome::Alive, now);
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(mut b) = entry.call.b.take() else {
            return;
        };
        self.learn_dialog(&mut b, &resp);
        let has_media = self.calls.get(&c).is_some_and(|e| e.call.media.is_some());
        let applied = if resp.body.is_empty() || !super::is_sdp(resp.content_type.as_deref()) {
            if has_media {
                Err("answer without SDP".to_string())
            } else {
                Ok(())
            }
        } else {
            self.with_media(c, |m, _, out| m.reroute_answer(Side::B, &resp.body, out))
                .unwrap_or(Ok(()))
                .map_err(|e| e.to_string())
        };
        let ack = self.send_ack(&b, resp.cseq, None);
        if let Err(e) = applied {
            // Unusable: hang that one up and try the next provider.
            warn!(call = %self.call_name(c), target_id = %target, "re-route answer refused: {e}");
            let flow = b.flow;
            let mut leg = b.clone();
            self.send_in_dialog(
                &mut leg,
                "BYE",
                vec![reason_header(&e)],
                None,
                Purpose::Ignore,
                flow,
                now,
            );
            if let Some(entry) = self.calls.get_mut(&c) {
                entry.call.b = Some(b);
            }
            let why = format!("{} {} ({e})", resp.status, resp.reason);
            return self.attempt_failed(c, attempt, 488, &why, AttemptOutcome::Answered, now);
        }
        let entry = self.calls.get_mut(&c).expect("present");
        entry.call.b = Some(b);
        entry.b_ack = Some(ack);
        entry.b_invite = None;
        entry.call.attempts[attempt].outcome = Some(format!("{} {}", resp.status, resp.reason));
        self.reroute_done(c, &target, now);
        self.arm_session_timer(c, Side::B, resp.session_expires, false, now);
    }

    /// The new AI leg (SIP or WebSocket) of call `c` to `target` is up: the call is
    /// confirmed again and the re-route recorded.
    pub(super) fn reroute_done(&mut self, c: CallRef, target: &TargetId, now: Instant) {
        // Break after make: the leg kept until now is let go, and the caller hears gap
        // audio from the switch until the new provider's first audio.
        if self.calls.get(&c).is_some_and(|e| e.kept.is_some()) {
            self.retire_kept(c, &format!("re-routed to {target}"), true, now);
            let gap_audio = self.config.ai.gap_audio;
            if gap_audio.is_some() {
                self.with_media(c, |m, _, out| m.fill(Side::A, gap_audio, out));
            }
        }
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        entry.call.pinned = Some(target.to_string());
        entry.call.state = CallState::Confirmed;
        self.metrics.attempts.inc((target.to_string(), "answered"));
        let setup = entry
            .reroute_started
            .take()
            .map(|(t, _)| now.saturating_duration_since(t));
        let id = entry.call.id.clone();
        let mut from = String::new();
        let mut trigger = "";
        if let Some(r) = entry.call.reroutes.last_mut() {
            r.to = Some(target.to_string());
            r.setup_ms = setup.map(millis);
            r.outcome = Some(match &entry.call.transfer_to {
                Some(n) => format!("no AI provider left; transferred to {n} via {target}"),
                None => format!("answered by {target}"),
            });
            from.clone_from(&r.from);
            trigger = r.trigger.as_str();
        }
        info!(
            call = %id, from = %from, to = %target, trigger,
            setup_ms = setup.map(millis), "AI leg re-routed"
        );
        self.notify_reroute(c);
    }

    /// `call.ai_rerouted` for the user's webhook (when configured): the call, the failed
    /// and the new provider (or the outcome when none took over), and what happened.
    pub(super) fn notify_reroute(&mut self, c: CallRef) {
        if self.config.ai.webhook.is_none() {
            return;
        }
        let Some(call) = self.calls.get(&c).map(|e| &e.call) else {
            return;
        };
        let Some(r) = call.reroutes.last() else {
            return;
        };
        self.webhooks.push_back(serde_json::json!({
            "event": "call.ai_rerouted",
            "call_id": call.id,
            "caller": call.caller,
            "callee": call.callee,
            "rule": call.rule,
            "regions": call.regions,
            "reroute_count": call.reroutes.len(),
            "trigger": r.trigger.as_str(),
            "detail": r.detail,
            "from": r.from,
            "to": r.to,
            "setup_ms": r.setup_ms,
            "outcome": r.outcome,
            "transferred_to": call.transfer_to,
        }));
    }

    /// No provider is left for a call being re-routed: it ends cleanly, BYE to the carrier
    /// with a Reason naming what happened.
    pub(super) fn reroute_exhausted(&mut self, c: CallRef, now: Instant) {
        if self.calls.get(&c).is_some_and(|e| e.kept.is_some()) {
            return self.reroute_kept(c, now);
        }
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let from = entry.reroute_started.take().map_or(0, |(_, n)| n);
        let tried: Vec<String> = entry.call.attempts[from.min(entry.call.attempts.len())..]
            .iter()
            .map(|a| format!("{} {}", a.target, a.outcome.as_deref().unwrap_or("?")))
            .collect();
        let why = if tried.is_empty() {
            "AI provider failed and no other provider is available".to_string()
        } else {
            format!(
                "AI provider failed and every other provider failed: {}",
                tried.join("; ")
            )
        };
        if let Some(r) = entry.call.reroutes.last_mut() {
            r.outcome = Some("no AI provider left".into());
        }
        let transferring = entry.call.transfer_to.is_some();
        if !transferring {
            self.stats.reroutes_failed += 1;
        }
        match self.config.ai.no_provider.clone() {
            NoProvider::Transfer { number }
                if !transferring && self.reroute_transfer(c, &number, &why, now) =>
            {
                return;
            }
            NoProvider::Prompt(audio) if !transferring => {
                info!(call = %self.call_name(c), "{why}; playing the no-provider prompt, then hanging up");
                self.with_media(c, |m, _, out| m.fill(Side::A, Some(audio), out));
                if let Some(e) = self.calls.get_mut(&c) {
                    e.call.end_reason = Some(why);
                }
                let at = now + audio.prompt_duration() + PROMPT_TAIL;
                self.set_deadline(c, CallTimer::PromptDone, at);
                self.notify_reroute(c);
                return;
            }
            _ => {}
        }
        self.notify_reroute(c);
        self.end_call(c, &why, None, now);
    }

    /// No AI provider is left: dial `number` through the outbound carrier routing, within
    /// the call's regions, as the call's new B leg. `false` when no carrier may take it.
    fn reroute_transfer(&mut self, c: CallRef, number: &str, why: &str, now: Instant) -> bool {
        let Some(call) = self.calls.get(&c).map(|e| &e.call) else {
            return false;
        };
        let origin = TargetId::from(
            call.reroutes
                .last()
                .map_or(call.origin.as_str(), |r| r.from.as_str()),
        );
        let Some(rule) = self
            .routing
            .match_outbound(&origin, number, &call.caller)
            .cloned()
        else {
            warn!(call = %call.id, number, "{why}; no outbound route for the transfer number");
            return false;
        };
        let candidates = self.plan_in_regions(c, &rule, now);
        let Some(call) = self.calls.get(&c).map(|e| &e.call) else {
            return false;
        };
        if candidates.is_empty() {
            warn!(call = %call.id, number, "{why}; no carrier in the call's regions for the transfer");
            return false;
        }
        info!(call = %call.id, number, carriers = ?candidates.iter().map(|c| c.target.as_str()).collect::<Vec<_>>(), "{why}; transferring the caller");
        let Some(entry) = self.calls.get_mut(&c) else {
            return false;
        };
        let attempts = entry.call.attempts.len();
        entry.reroute_started = Some((now, attempts));
        entry.call.transfer_to = Some(number.to_string());
        entry.call.candidates = candidates;
        entry.call.next_candidate = 0;
        self.next_attempt(c, now);
        true
    }

    /// The relay reports the first audio of the new provider reached the carrier: the gap
    /// the caller heard is recorded on the re-route.
    pub(super) fn reroute_resumed(&mut self, c: CallRef, gap: Option<Duration>) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let id = entry.call.id.clone();
        let Some(r) = entry
            .call
            .reroutes
            .iter_mut()
            .rev()
            .find(|r| r.to.is_some() && r.gap_ms.is_none())
        else {
            return;
        };
        r.gap_ms = gap.map(millis);
        if let Some(g) = gap {
            self.metrics.reroute_gap.observe(g.as_secs_f64());
        }
        info!(
            call = %id, from = %r.from, to = r.to.as_deref().unwrap_or("-"),
            trigger = r.trigger.as_str(), gap_ms = r.gap_ms, setup_ms = r.setup_ms,
            "AI audio resumed after re-route"
        );
    }

    /// Calls on a provider whose OPTIONS health just turned down move to another one.
    pub(super) fn reroute_on_health(
        &mut self,
        target: &TargetId,
        to: State,
        reason: &str,
        now: Instant,
    ) {
        if to != State::Down
            || self
                .config
                .target(target)
                .is_none_or(|t| t.role != crate::config::Role::AiProvider)
        {
            return;
        }
        let calls: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, e)| {
                e.call.state == CallState::Confirmed && e.call.pinned.as_deref() == Some(&**target)
            })
            .map(|(c, _)| *c)
            .collect();
        for c in calls {
            // The provider's health says nothing certain about this call's leg: it keeps
            // the call unless another provider takes it.
            self.reroute(
                c,
                RerouteTrigger::HealthDown,
                format!("health: {reason}"),
                false,
                now,
            );
        }
    }

    /// No provider could take over from the AI leg the re-route kept: the call stays with
    /// it, exactly as it was (dialog, media, session timer).
    fn reroute_kept(&mut self, c: CallRef, now: Instant) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(k) = entry.kept.take() else {
            return;
        };
        let from = entry.reroute_started.take().map_or(0, |(_, n)| n);
        let tried: Vec<String> = entry.call.attempts[from.min(entry.call.attempts.len())..]
            .iter()
            .map(|a| format!("{} {}", a.target, a.outcome.as_deref().unwrap_or("?")))
            .collect();
        let timer = k.b.as_ref().and_then(|b| b.session_timer.clone());
        entry.call.b = k.b;
        entry.call.ws = k.ws;
        entry.call.pinned = Some(k.pinned.clone());
        entry.call.state = CallState::Confirmed;
        entry.b_ack = k.b_ack;
        let outcome = format!(
            "no other provider took the call; it stayed with {}",
            k.pinned
        );
        if let Some(r) = entry.call.reroutes.last_mut() {
            r.outcome = Some(outcome.clone());
        }
        let id = entry.call.id.clone();
        self.stats.reroutes_failed += 1;
        warn!(
            call = %id, provider = %k.pinned, tried = %tried.join("; "),
            "{outcome}"
        );
        self.with_media(c, |m, _, out| m.reroute_abandoned(Side::B, out));
        if let Some(t) = timer {
            self.set_session_timer(c, Side::B, t.interval, t.we_refresh, now);
        }
        self.count_target(c, Some(TargetId::from(k.pinned.as_str())));
        self.notify_reroute(c);
    }
}
