//! WebSocket AI legs (`media-stream`, `openai-realtime` providers) in the call core.
//!
//! Such a leg has no SIP dialog. An attempt to a WebSocket provider emits
//! [`AiCommand::Open`] with the codec the carrier leg offered (G.711, so nothing is
//! transcoded) and the relay's AI-side address; the AI shell connects, bridges, and reports
//! [`AiEvent::Up`] with its bridge's RTP address. The core then answers the AI side's offer
//! on the bridge's behalf ([`bridge_answer`]), so the relay latches to the bridge exactly as
//! it would to a SIP agent's media, and the caller gets its 200 (or, during a re-route, the
//! relay's source switch keeps the carrier's stream continuous and nothing is sent).
//!
//! Failures map onto the SIP machinery: a leg that cannot be set up is a failed attempt (the
//! next provider is tried; the breaker counts it), a leg that drops or reports an error
//! mid-call re-routes the call (trigger `websocket`), a normal close by the bot is the agent
//! hanging up. Carrier requests meant for the AI side are answered here: INFO digits go to
//! the bot as DTMF; a renegotiation the bridge cannot follow gets 488 and the session stays.
//! Handshake probes stand in for OPTIONS pings.
//!
//! Like the rest of the core this never touches a socket or the clock.
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

use super::{attempt_target, CallRef, CallTimer, Core};
use crate::ai::control::{AiCommand, AiEvent, OpenLeg, RerouteContext, TranscriptItem, WsProvider};
use crate::b2bua::call::{Attempt, CallState, RerouteTrigger, Side, WsLeg};
use crate::b2bua::media::{bridge_answer, bridge_codec};
use crate::b2bua::msg::Req;
use crate::health::{AttemptOutcome, Destination};
use crate::media::relay::Latching;
use crate::routing::TargetId;

/// The transcript kept on a call: the last this many utterances…
const TRANSCRIPT_MAX_ITEMS: usize = 200;
/// …and at most this much text, so the call's state stays small enough to replicate.
const TRANSCRIPT_MAX_BYTES: usize = 32 * 1024;

impl Core {
    /// Starts an attempt of call `c` to WebSocket provider `target` at `dest`.
    pub(super) fn start_ws_attempt(
        &mut self,
        c: CallRef,
        target: TargetId,
        dest: Destination,
        ws: Arc<WsProvider>,
        now: Instant,
    ) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let attempt = entry.call.attempts.len();
        entry.call.attempts.push(Attempt {
            target: target.to_string(),
            remote: dest.addr,
            transport: dest.transport,
            outcome: None,
            provisional: false,
        });
        // The bridge speaks the carrier leg's G.711; without an offer (or without G.711 in
        // it) there is nothing to bridge, and the next provider may be a SIP agent.
        let codec = entry.call.offer.as_deref().and_then(bridge_codec);
        let relay = codec.and_then(|k| {
            entry
                .call
                .media
                .as_ref()
                .and_then(|m| m.relay_addr(Side::B, k.stream))
        });
        let (Some(codec), Some(relay)) = (codec, relay) else {
            let why = if entry.call.offer.is_none() {
                "488 the caller's INVITE has no SDP offer; a WebSocket provider needs one"
            } else {
                "488 no G.711 (PCMU/PCMA) audio offered; a WebSocket provider needs it"
            };
            info!(call = %entry.call.id, target_id = %target, "{why}");
            entry.call.attempts[attempt].outcome = Some(why.into());
            return self.next_attempt(c, now);
        };
        // The bridge sends from exactly the address its answer gives: strict. A previous
        // attempt's peer may have sent packets: the bridge latches afresh.
        let again = attempt > 0 && entry.call.state != CallState::Rerouting;
        self.with_media(c, |m, _, out| {
            m.set_latching(Side::B, Latching::Strict);
            if again {
                m.reset_peer(Side::B, out);
            }
        });
        let leg = self.new_id();
        let seed = self.ids.next_u64();
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let call = &mut entry.call;
        call.ws = Some(WsLeg {
            leg,
            provider: target.to_string(),
            kind: ws.kind,
            attempt,
            stream: codec.stream,
            law: codec.law,
            payload_type: codec.payload_type,
            dtmf_payload_type: codec.dtmf_payload_type,
            media: None,
        });
        let open = OpenLeg {
            leg,
            call: call.id.clone(),
            provider: target.to_string(),
            dest: dest.addr,
            ws: ws.clone(),
            law: codec.law,
            payload_type: codec.payload_type,
            dtmf_payload_type: codec.dtmf_payload_type,
            relay,
            // The relay's own address (loopback when it binds every address): the bridge
            // stays on the host, beside the relay.
            bind: relay.ip(),
            caller: call.caller.clone(),
            callee: call.callee.clone(),
            reroute: call.reroutes.last().map(|r| RerouteContext {
                count: call.reroutes.len(),
                from: r.from.clone(),
                trigger: r.trigger.as_str().into(),
            }),
            transcript: call.transcript.clone(),
            setup_timeout: ws.setup_timeout,
            seed,
        };
        info!(
            call = %call.id, target_id = %target, kind = ws.kind.as_str(), remote = %dest.addr,
            url = %ws.url, attempt = attempt + 1, "trying"
        );
        entry.b_invite = None;
        self.ai_legs.insert(leg, c);
        self.ai_out.push_back(AiCommand::Open(Box::new(open)));
        // A half-open breaker lets exactly one probe call through; this marks it taken.
        self.health.handle_attempt_started(&target, now);
        self.count_target(c, Some(target));
        self.set_deadline(c, CallTimer::Attempt(attempt), now + ws.setup_timeout);
    }

    /// The setup timeout of call `c`'s attempt `n` when it is a WebSocket leg still being
    /// set up.
    pub(super) fn ws_setup_timeout(&self, c: CallRef, n: usize) -> Option<Duration> {
        let e = self.calls.get(&c)?;
        let ws = e
            .call
            .ws
            .as_ref()
            .filter(|w| w.attempt == n && w.media.is_none())?;
        // A reload may have removed the provider meanwhile: its timer still fires as a
        // setup timeout.
        Some(
            self.config
                .target(&ws.provider)
                .and_then(|t| t.ws.as_ref())
                .map_or(self.settings.attempt_timeout, |w| w.setup_timeout),
        )
    }

    /// Forgets call `c`'s WebSocket leg and tells the shell to close it (a no-op there when
    /// it already ended).
    pub(super) fn drop_ws_leg(&mut self, c: CallRef, why: &str) {
        let Some(ws) = self.calls.get_mut(&c).and_then(|e| e.call.ws.take()) else {
            return;
        };
        self.ai_legs.remove(&ws.leg);
        self.ai_out.push_back(AiCommand::Close {
            leg: ws.leg,
            why: why.to_string(),
        });
    }

    /// A carrier request meant for the AI side of a call whose AI leg is a WebSocket: INFO
    /// digits (RFC 2976 with `application/dtmf-relay` or `application/dtmf`) go to the bot;
    /// a re-offer that needs renegotiation gets 488, and the session stays as it was
    /// (RFC 3264 §8: the bridge speaks one codec); anything else is acknowledged.
    pub(super) fn ws_in_dialog(
        &mut self,
        c: CallRef,
        from: Side,
        sid: u64,
        req: &Req,
        reoffer: bool,
        now: Instant,
    ) {
        match req.method.as_str() {
            "INVITE" | "UPDATE" => {
                if reoffer {
                    self.with_media(c, |m, _, out| m.offer_rejected(from, out));
                }
                let h = vec![(
                    "Warning".to_string(),
                    "399 holdfast \"the AI leg is a WebSocket bridge; its codec cannot change\""
                        .to_string(),
                )];
                self.respond(sid, 488, None, h, None, now);
            }
            "INFO" => {
                let digits = dtmf_from_info(req.content_type.as_deref(), &req.body);
                let leg = self
                    .calls
                    .get(&c)
                    .and_then(|e| e.call.ws.as_ref())
                    .filter(|w| w.media.is_some())
                    .map(|w| w.leg);
                if let Some(leg) = leg {
                    for digit in digits {
                        self.ai_out.push_back(AiCommand::Dtmf { leg, digit });
                    }
                }
                self.respond(sid, 200, None, vec![], None, now);
            }
            _ => self.respond(sid, 200, None, vec![], None, now),
        }
    }

    /// A handshake probe instead of an OPTIONS ping, for a WebSocket provider.
    pub(super) fn send_ws_probe(
        &mut self,
        probe: crate::health::Probe<TargetId>,
        ws: Arc<WsProvider>,
    ) {
        let id = self.new_id();
        self.ai_probes.insert(id, probe.id);
        self.ai_out.push_back(AiCommand::Probe {
            probe: id,
            provider: probe.target.to_string(),
            dest: probe.dest.addr,
            ws,
            timeout: self.config.health.ping_timeout,
        });
    }

    /// An event from the AI shell.
    pub fn handle_ai_event(&mut self, ev: AiEvent, now: Instant) {
        match ev {
            AiEvent::Up { leg, media } => self.ws_up(leg, media, now),
            AiEvent::Failed { leg, status, why } => {
                let Some(&c) = self.ai_legs.get(&leg) else {
                    return;
                };
                let Some(ws) = self.current_ws(c, leg) else {
                    return;
                };
                if ws.media.is_some() {
                    return;
                }
                let detail = match status {
                    Some(s) => format!("websocket handshake refused: HTTP {s} ({why})"),
                    None => format!("websocket: {why}"),
                };
                // Every setup failure of a WebSocket provider moves on: a handshake refusal is
                // the provider's (or its key's) failure, never the callee's answer.
                let outcome = match status {
                    Some(s) if (500..600).contains(&s) => AttemptOutcome::ServerError(s),
                    _ => AttemptOutcome::ServerError(503),
                };
                self.attempt_failed(c, ws.attempt, 503, &detail, outcome, now);
            }
            AiEvent::Closed { leg, failure, why } => {
                let Some(&c) = self.ai_legs.get(&leg) else {
                    return;
                };
                let kept = self.calls.get(&c).is_some_and(|e| {
                    e.kept
                        .as_ref()
                        .and_then(|k| k.ws.as_ref())
                        .is_some_and(|w| w.leg == leg)
                });
                if kept {
                    // The leg a re-route is replacing ended first.
                    if failure {
                        self.kept_leg_gone(c, &why, false, now);
                    } else {
                        if let Some(k) = self.calls.get_mut(&c).and_then(|e| e.kept.take()) {
                            if let Some(ws) = k.ws {
                                self.ai_legs.remove(&ws.leg);
                            }
                        }
                        let why = format!("AI agent hung up ({why})");
                        self.end_call(c, &why, Some(Side::B), now);
                    }
                    return self.after_health(now);
                }
                if self.current_ws(c, leg).is_none_or(|w| w.media.is_none()) {
                    return;
                }
                if !failure {
                    info!(call = %self.call_name(c), "AI agent closed its WebSocket: {why}");
                    self.end_call(c, &format!("AI agent hung up ({why})"), Some(Side::B), now);
                } else if !self.reroute(c, RerouteTrigger::Websocket, why.clone(), true, now) {
                    self.end_call(c, &format!("AI leg failed: {why}"), None, now);
                }
            }
            AiEvent::Check { leg, alive } => {
                let Some(&c) = self.ai_legs.get(&leg) else {
                    return;
                };
                if self.current_ws(c, leg).is_some() {
                    if alive {
                        self.check_alive(c, Side::B, "answered a WebSocket ping");
                    } else {
                        self.check_unanswered(c, Side::B, now);
                    }
                }
            }
            AiEvent::Transcript { leg, item } => {
                let Some(&c) = self.ai_legs.get(&leg) else {
                    return;
                };
                if let Some(e) = self.calls.get_mut(&c) {
                    push_transcript(&mut e.call.transcript, item);
                }
            }
            AiEvent::Probe {
                probe,
                status,
                rtt,
                why,
            } => {
                let Some(id) = self.ai_probes.remove(&probe) else {
                    return;
                };
                debug!(probe, status, ?rtt, "websocket probe: {why}");
                let sent = self.health.probe_in_flight(id);
                if self.health.handle_probe_response(id, status, now) {
                    self.metrics.probe_rtt(sent, now);
                }
            }
        }
        self.after_health(now);
    }

    /// Call `c`'s WebSocket leg if it is `leg`.
    fn current_ws(&self, c: CallRef, leg: u64) -> Option<WsLeg> {
        self.calls.get(&c)?.call.ws.clone().filter(|w| w.leg == leg)
    }

    /// The shell set the leg up: answer the AI side's offer on the bridge's behalf, then
    /// answer the caller (or, re-routing, switch the relay's source).
    fn ws_up(&mut self, leg: u64, media: std::net::SocketAddr, now: Instant) {
        let Some(&c) = self.ai_legs.get(&leg) else {
            return;
        };
        let Some(ws) = self.current_ws(c, leg).filter(|w| w.media.is_none()) else {
            return;
        };
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let attempt = ws.attempt;
        if entry.call.attempts.len() != attempt + 1
            || entry.call.attempts[attempt].outcome.is_some()
        {
            return;
        }
        entry.deadlines.remove(&CallTimer::Attempt(attempt));
        if let Some(w) = entry.call.ws.as_mut() {
            w.media = Some(media);
        }
        let (target, dest) = attempt_target(&entry.call.attempts[attempt]);
        let rerouting = entry.call.state == CallState::Rerouting;
        let codec = crate::b2bua::media::BridgeCodec {
            stream: ws.stream,
            law: ws.law,
            payload_type: ws.payload_type,
            dtmf_payload_type: ws.dtmf_payload_type,
        };
        let offer = entry.call.offer.clone().unwrap_or_default();
        let answer = bridge_answer(&offer, &codec, media, leg);
        self.health
            .handle_attempt(&target, &dest, AttemptOutcome::Alive, now);
        let applied = if rerouting {
            self.with_media(c, |m, _, out| {
                m.reroute_answer(Side::B, &answer, out).map(|()| None)
            })
        } else {
            self.with_media(c, |m, _, out| m.answer(Side::B, &answer, out).map(Some))
        };
        let sdp = match applied {
            Some(Ok(sdp)) => sdp,
            Some(Err(e)) => {
                warn!(call = %self.call_name(c), target_id = %target, "bridge answer refused: {e}");
                let why = format!("bridge answer refused: {e}");
                return self.attempt_failed(c, attempt, 488, &why, AttemptOutcome::Answered, now);
            }
            None => None,
        };
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        entry.call.attempts[attempt].outcome = Some(format!("up ({})", ws.kind.as_str()));
        info!(call = %entry.call.id, target_id = %target, bridge = %media, "WebSocket AI leg up");
        if rerouting {
            self.reroute_done(c, &target, now);
        } else {
            self.answer_caller(c, &target, (200, "OK"), Vec::new(), sdp, now);
        }
    }
}

/// Appends `item` to a call's transcript, keeping it within its bounds (oldest dropped).
fn push_transcript(t: &mut Vec<TranscriptItem>, item: TranscriptItem) {
    if item.text.trim().is_empty() {
        return;
    }
    let mut item = item;
    if item.text.len() > TRANSCRIPT_MAX_BYTES {
        let mut cut = TRANSCRIPT_MAX_BYTES;
        while !item.text.is_char_boundary(cut) {
            cut -= 1;
        }
        item.text.truncate(cut);
    }
    t.push(item);
    let mut bytes: usize = t.iter().map(|i| i.text.len()).sum();
    while t.len() > TRANSCRIPT_MAX_ITEMS || bytes > TRANSCRIPT_MAX_BYTES {
        bytes -= t.remove(0).text.len();
    }
}

/// The digits of a SIP INFO body: `application/dtmf-relay` (`Signal=5`) or
/// `application/dtmf` (`5`). Anything else carries none.
fn dtmf_from_info(content_type: Option<&str>, body: &[u8]) -> Vec<char> {
    let ct = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let text = String::from_utf8_lossy(body);
    let valid = |c: char| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D');
    match ct.as_str() {
        "application/dtmf-relay" => text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("signal"))
            .filter_map(|(_, v)| v.trim().chars().next())
            .map(|c| c.to_ascii_uppercase())
            .filter(|c| valid(*c))
            .take(1)
            .collect(),
        "application/dtmf" => text
            .trim()
            .chars()
            .next()
            .map(|c| c.to_ascii_uppercase())
            .filter(|c| valid(*c))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::control::Speaker;

    #[test]
    fn info_digits() {
        assert_eq!(
            dtmf_from_info(
                Some("application/dtmf-relay"),
                b"Signal=5\r\nDuration=160\r\n"
            ),
            vec!['5']
        );
        assert_eq!(dtmf_from_info(Some("application/dtmf"), b"#"), vec!['#']);
        assert_eq!(
            dtmf_from_info(Some("application/dtmf-relay"), b"Signal=x"),
            Vec::<char>::new()
        );
        assert_eq!(dtmf_from_info(Some("text/plain"), b"5"), Vec::<char>::new());
        assert_eq!(dtmf_from_info(None, b"Signal=5"), Vec::<char>::new());
    }

    #[test]
    fn transcript_is_bounded() {
        let mut t = Vec::new();
        for i in 0..(TRANSCRIPT_MAX_ITEMS + 50) {
            push_transcript(
                &mut t,
                TranscriptItem {
                    speaker: Speaker::Caller,
                    text: format!("line {i}"),
                },
            );
        }
        assert_eq!(t.len(), TRANSCRIPT_MAX_ITEMS);
        assert_eq!(t[0].text, "line 50", "oldest dropped first");
        push_transcript(
            &mut t,
            TranscriptItem {
                speaker: Speaker::Agent,
                text: "é".repeat(TRANSCRIPT_MAX_BYTES),
            },
        );
        let bytes: usize = t.iter().map(|i| i.text.len()).sum();
        assert!(bytes <= TRANSCRIPT_MAX_BYTES);
        assert_eq!(t.len(), 1);
        push_transcript(
            &mut t,
            TranscriptItem {
                speaker: Speaker::Agent,
                text: "  ".into(),
            },
        );
        assert_eq!(t.len(), 1, "empty utterances are skipped");
    }
}
