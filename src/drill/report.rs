//! The drill's verdict: from what each synthetic call observed (setup, when its caller
//! talked, tagged echoes, BYEs) to one row per call (survived or dropped, re-route gap,
//! provider before and after, talking or pausing at the failure), the summary figures (gap
//! p50/p99/max, setup and failover times), and the three renderings (the terminal table, the
//! Markdown postmortem, the `--json` document).
//!
//! Judged against what the caller did, so the same rules hold for callers that talk
//! continuously and for callers that talk in turns (`--quiet-agents`), whose agents are
//! silent while they pause: a gap is agent audio missing *while the caller talked*, and a
//! call is up at the end when its caller heard its agent in its last talk spurt after the
//! failure. Pauses are never silence to blame on anyone.
//!
//! Pure functions over plain data: never touches a socket, a clock or a file.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use super::turns::Turns;

/// What a synthetic call exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Carrier → holdfast → SIP AI agent.
    InboundSip,
    /// Carrier → holdfast → media-stream WebSocket bot.
    InboundWs,
    /// AI agent → holdfast → carrier.
    Outbound,
}

impl CallKind {
    pub fn label(self) -> &'static str {
        match self {
            CallKind::InboundSip => "in/sip",
            CallKind::InboundWs => "in/ws",
            CallKind::Outbound => "out",
        }
    }
}

/// Everything one synthetic call observed. Instants are offsets from the drill's start.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub index: u16,
    pub kind: CallKind,
    pub callee: String,
    /// The Call-ID of the drill's INVITE.
    pub call_id: String,
    pub placed_at: Duration,
    /// INVITE → 200 OK, when the call was answered.
    pub setup: Option<Duration>,
    /// Why the call never connected (final status or timeout).
    pub setup_error: Option<String>,
    /// When the caller talked: (start, end) of each talk spurt, in order (one spurt from
    /// the answer to the end when it talks continuously).
    pub talk: Vec<(Duration, Duration)>,
    /// Tagged echoes heard: (when, peer index).
    pub echoes: Vec<(Duration, u8)>,
    /// Echoes carrying another call's index (cross-talk).
    pub crossed: u64,
    /// RTP packets sent.
    pub sent: u64,
    /// When holdfast hung the call up (its BYE), if it did.
    pub remote_bye_at: Option<Duration>,
    /// Final status of the drill's own BYE; `None`: not sent or not answered.
    pub bye_status: Option<u16>,
}

/// What the analysis needs to know about the drill run.
#[derive(Debug, Clone)]
pub struct Context {
    /// When the failure was injected.
    pub failure_at: Duration,
    /// When the drill started hanging up (end of the hold).
    pub end_at: Duration,
    /// Peer names by peer index.
    pub peers: Vec<String>,
    /// The carrier outbound calls try first (the rule's priority-1 carrier).
    pub primary_carrier: String,
    /// Names of the endpoints that were failed.
    pub failed: Vec<String>,
    /// The callers talked in turns (`--quiet-agents`): only wording depends on it.
    pub quiet: bool,
}

impl Context {
    fn peer(&self, idx: u8) -> String {
        self.peers
            .get(usize::from(idx))
            .cloned()
            .unwrap_or_else(|| format!("peer#{idx}"))
    }
}

/// A caller may have talked at most this long without hearing its agent at the end of its
/// last talk spurt (the end of the hold, when it talks continuously) for its call to count as
/// up.
pub const ALIVE_WINDOW: Duration = Duration::from_secs(1);
/// How late the echo of a talk spurt's last packet may come back and still belong to it.
pub const ECHO_SLACK: Duration = Duration::from_millis(500);

/// Where a call's caller was in its turns when the failure came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtFailure {
    Talking,
    Pausing,
}

impl AtFailure {
    pub fn label(self) -> &'static str {
        match self {
            AtFailure::Talking => "talking",
            AtFailure::Pausing => "pause",
        }
    }
}

/// How much of `(from, to)` the caller spent talking.
pub fn talk_within(talk: &[(Duration, Duration)], from: Duration, to: Duration) -> Duration {
    talk.iter()
        .map(|&(s, e)| e.min(to).saturating_sub(s.max(from)))
        .sum()
}

fn talking_at(talk: &[(Duration, Duration)], t: Duration) -> bool {
    talk.iter().any(|&(s, e)| s <= t && t < e)
}

/// One call's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub index: u16,
    pub kind: CallKind,
    pub callee: String,
    pub call_id: String,
    pub survived: bool,
    /// Inbound: the longest stretch of the caller's talk that went unheard between two
    /// tagged echoes after the failure (pauses do not count). Outbound: the setup time
    /// (INVITE → 200), failover included.
    pub gap: Option<Duration>,
    pub before: String,
    pub after: String,
    /// Whether this call depended on a failed endpoint.
    pub on_failed: bool,
    /// Talking or pausing when the failure came; `None` for a call not up then.
    pub at_failure: Option<AtFailure>,
    /// Echoes heard while the caller was not talking (0 unless an agent talks on its own).
    pub between_turns: usize,
    /// Why the call dropped, or what holdfast said about it (re-route trigger).
    pub note: String,
}

/// Verdict for one call.
pub fn analyze(c: &CallResult, ctx: &Context) -> Row {
    let last = c.echoes.last().copied();
    let (before, after, gap) = match c.kind {
        CallKind::Outbound => (
            ctx.primary_carrier.clone(),
            last.map_or("-".into(), |(_, p)| ctx.peer(p)),
            c.setup,
        ),
        CallKind::InboundSip | CallKind::InboundWs => {
            let before = c
                .echoes
                .iter()
                .rev()
                .find(|(t, _)| *t < ctx.failure_at)
                .map_or("-".into(), |(_, p)| ctx.peer(*p));
            // Only who answers after the failure counts as "after".
            let after = last
                .filter(|(t, _)| *t >= ctx.failure_at)
                .map_or("-".into(), |(_, p)| ctx.peer(p));
            (
                before,
                after,
                gap_after(&c.echoes, &c.talk, ctx.failure_at, ctx.end_at),
            )
        }
    };
    let on_failed = ctx.failed.contains(&before);
    // The caller's last talk spurt, if it talked after the failure at all.
    let last_spurt = c.talk.last().copied().filter(|(_, e)| *e > ctx.failure_at);
    // Heard its agent after the failure in its last talk spurt, and talked no more than
    // ALIVE_WINDOW unheard at the end of it.
    let unheard_at_end = last.map(|(t, _)| talk_within(&c.talk, t, ctx.end_at));
    let heard_at_end = match (last_spurt, last, unheard_at_end) {
        (Some((s, _)), Some((t, _)), Some(u)) => t >= s.max(ctx.failure_at) && u <= ALIVE_WINDOW,
        _ => false,
    };
    let up_at_failure = c.setup.is_some()
        && c.placed_at < ctx.failure_at
        && c.remote_bye_at.is_none_or(|t| t >= ctx.failure_at);
    let at_failure = up_at_failure.then(|| {
        if talking_at(&c.talk, ctx.failure_at) {
            AtFailure::Talking
        } else {
            AtFailure::Pausing
        }
    });
    let between_turns = c
        .echoes
        .iter()
        .filter(|(t, _)| !c.talk.iter().any(|&(s, e)| s <= *t && *t < e + ECHO_SLACK))
        .count();
    let note = if let Some(e) = &c.setup_error {
        format!("not connected: {e}")
    } else if let Some(t) = c.remote_bye_at {
        format!("hung up by holdfast at t+{}", secs(t))
    } else if last_spurt.is_none() {
        "the caller did not talk after the failure (--hold too short to judge)".into()
    } else if !heard_at_end {
        match (last, unheard_at_end) {
            (Some((t, _)), Some(u)) if ctx.quiet => format!(
                "no audio since t+{} ({} ms of its talk unheard)",
                secs(t),
                u.as_millis()
            ),
            (Some((t, _)), _) => format!("no audio since t+{}", secs(t)),
            _ => "no audio at all".into(),
        }
    } else if c.bye_status.is_none() {
        "the drill's BYE got no answer".into()
    } else if let Some(s) = c.bye_status.filter(|s| !(200..300).contains(s)) {
        format!("the drill's BYE got {s}")
    } else if c.crossed > 0 {
        format!("{} packets of another call", c.crossed)
    } else if between_turns > 0 {
        format!("{between_turns} packets of agent audio while the caller was silent")
    } else {
        String::new()
    };
    let survived = c.setup.is_some()
        && c.remote_bye_at.is_none()
        && heard_at_end
        && c.bye_status.is_some_and(|s| (200..300).contains(&s))
        && c.crossed == 0;
    Row {
        index: c.index,
        kind: c.kind,
        callee: c.callee.clone(),
        call_id: c.call_id.clone(),
        survived,
        // A dropped call has no re-route gap, only silence.
        gap: gap.filter(|_| survived),
        before,
        after,
        on_failed,
        at_failure,
        between_turns,
        note,
    }
}

/// The longest stretch of the caller's talk (`talk`) that went unheard between consecutive
/// tagged echoes, for the silences that end after `failure_at`; a stream that stopped for
/// good counts up to `end_at`. A caller's pauses are not part of any gap: a caller that
/// talks continuously makes this the longest silence between two echoes.
pub fn gap_after(
    echoes: &[(Duration, u8)],
    talk: &[(Duration, Duration)],
    failure_at: Duration,
    end_at: Duration,
) -> Option<Duration> {
    let mut gap = echoes
        .windows(2)
        .filter(|w| w[1].0 >= failure_at)
        .map(|w| talk_within(talk, w[0].0, w[1].0))
        .max();
    if let Some((t, _)) = echoes.last() {
        if talk_within(talk, *t, end_at) > ALIVE_WINDOW {
            let open = talk_within(talk, (*t).max(failure_at), end_at);
            gap = Some(gap.map_or(open, |g| g.max(open)));
        }
    }
    gap
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted values.
pub fn percentile(sorted: &[Duration], p: u32) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1);
    sorted.get(rank as usize - 1).copied()
}

/// Aggregate figures over the rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub placed: usize,
    pub connected: usize,
    pub survived: usize,
    pub dropped: usize,
    /// Calls that depended on a failed endpoint, and how they fared.
    pub on_failed: usize,
    pub on_failed_survived: usize,
    pub on_failed_dropped: usize,
    /// Of the calls on a failed endpoint: how many were pausing when it failed.
    pub on_failed_pausing: usize,
    /// Re-route gaps of the inbound calls that were on a failed endpoint.
    pub gap_p50: Option<Duration>,
    pub gap_p99: Option<Duration>,
    pub gap_max: Option<Duration>,
    /// INVITE → 200 of the calls placed before the failure.
    pub setup_p50: Option<Duration>,
    pub setup_max: Option<Duration>,
    /// INVITE → 200 of outbound calls placed after the failure (failover included).
    pub failover_p50: Option<Duration>,
    pub failover_max: Option<Duration>,
}

pub fn summarize(rows: &[Row], results: &[CallResult]) -> Summary {
    let mut s = Summary {
        placed: rows.len(),
        connected: results.iter().filter(|c| c.setup.is_some()).count(),
        survived: rows.iter().filter(|r| r.survived).count(),
        ..Summary::default()
    };
    s.dropped = s.placed - s.survived;
    s.on_failed = rows.iter().filter(|r| r.on_failed).count();
    s.on_failed_survived = rows.iter().filter(|r| r.on_failed && r.survived).count();
    s.on_failed_dropped = s.on_failed - s.on_failed_survived;
    s.on_failed_pausing = rows
        .iter()
        .filter(|r| r.on_failed && r.at_failure == Some(AtFailure::Pausing))
        .count();
    let mut gaps: Vec<Duration> = rows
        .iter()
        .filter(|r| r.on_failed && r.kind != CallKind::Outbound)
        .filter_map(|r| r.gap)
        .collect();
    gaps.sort();
    s.gap_p50 = percentile(&gaps, 50);
    s.gap_p99 = percentile(&gaps, 99);
    s.gap_max = gaps.last().copied();
    let mut setups: Vec<Duration> = results
        .iter()
        .filter(|c| c.kind != CallKind::Outbound)
        .filter_map(|c| c.setup)
        .collect();
    setups.sort();
    s.setup_p50 = percentile(&setups, 50);
    s.setup_max = setups.last().copied();
    let mut fo: Vec<Duration> = results
        .iter()
        .filter(|c| c.kind == CallKind::Outbound)
        .filter_map(|c| c.setup)
        .collect();
    fo.sort();
    s.failover_p50 = percentile(&fo, 50);
    s.failover_max = fo.last().copied();
    s
}

/// A timeline entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: Duration,
    pub text: String,
}

/// Per-call re-route events seen from the caller: the first audio from a new peer after the
/// failure, and how much of the caller's talk went unheard before it.
pub fn reroute_events(results: &[CallResult], ctx: &Context) -> Vec<Event> {
    let mut out = Vec::new();
    for c in results {
        let Some(prev) = c.echoes.iter().rev().find(|(t, _)| *t < ctx.failure_at) else {
            continue;
        };
        let mut cur = prev.1;
        let mut last_t = prev.0;
        for &(t, p) in c.echoes.iter().filter(|(t, _)| *t >= ctx.failure_at) {
            if p != cur {
                out.push(Event {
                    at: t,
                    text: format!(
                        "call {} ({}): audio from {} (was {}), silent for {} ms{}",
                        c.index,
                        c.callee,
                        ctx.peer(p),
                        ctx.peer(cur),
                        talk_within(&c.talk, last_t, t).as_millis(),
                        if ctx.quiet { " of its talk" } else { "" }
                    ),
                });
                cur = p;
            }
            last_t = t;
        }
        if let Some(t) = c.remote_bye_at {
            out.push(Event {
                at: t,
                text: format!("call {} ({}): hung up by holdfast", c.index, c.callee),
            });
        }
    }
    out
}

/// The whole drill, ready to render.
#[derive(Debug, Clone)]
pub struct Report {
    /// e.g. "ai-provider (SIGKILL agent-a)".
    pub scenario: String,
    /// UTC start, `YYYY-MM-DD HH:MM:SS`.
    pub started_utc: String,
    pub rows: Vec<Row>,
    pub summary: Summary,
    pub timeline: Vec<Event>,
    /// Caveats and remarks, one paragraph each.
    pub notes: Vec<String>,
    /// The hold after the failure.
    pub hold: Duration,
    /// How the callers talked: in these turns (`--quiet-agents`), or continuously.
    pub turns: Option<Turns>,
    /// How long the callers were silent before they hung up.
    pub caller_silence: Duration,
    /// holdfast's own count of the liveness checks it ran on AI legs, when it could be read.
    pub liveness: Option<LivenessChecks>,
}

/// holdfast's `holdfast_liveness_checks_total` for AI legs, by result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LivenessChecks {
    /// Silent long enough (`media.ai_timeout`) to be checked.
    pub started: u64,
    /// The check found the agent alive: the call stayed where it was.
    pub alive: u64,
    /// The check confirmed the agent gone.
    pub failed: u64,
    /// Unanswered by a peer not known to answer: the call stayed.
    pub unconfirmed: u64,
}

impl LivenessChecks {
    fn shown(r: &Report) -> Option<LivenessChecks> {
        r.liveness.filter(|l| r.turns.is_some() || l.started > 0)
    }
}

impl Report {
    /// One sentence on how the callers talked.
    pub fn speech(&self) -> String {
        let silence = if self.caller_silence.is_zero() {
            String::new()
        } else {
            format!(
                ", silent for the last {} before hanging up",
                human(self.caller_silence)
            )
        };
        match self.turns {
            Some(t) => format!(
                "Callers talked in turns ({} talk spurts, {} pauses{silence}); the agents only \
                 answered while they talked (--quiet-agents).",
                human(t.talk),
                human(t.pause)
            ),
            None => format!("Callers talked continuously{silence}."),
        }
    }
}

/// `2s`, `1.5s`, `250ms`.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

impl Report {
    /// Every call survived.
    pub fn passed(&self) -> bool {
        self.summary.dropped == 0 && self.summary.placed > 0
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| d.as_millis().to_string())
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// The terminal table: one row per call, then the verdict.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let gap_head = "gap ms";
    // In turns, where each caller was when the failure came.
    let turn_col = |v: &str| {
        if r.turns.is_some() {
            format!("{v:<10}  ")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "{:>4}  {:<6}  {:<13}  {:<8}  {:>7}  {:<10}  {:<10}  {}note",
        "call",
        "kind",
        "callee",
        "result",
        gap_head,
        "before",
        "after",
        turn_col("at failure")
    );
    for row in &r.rows {
        let _ = writeln!(
            out,
            "{:>4}  {:<6}  {:<13}  {:<8}  {:>7}  {:<10}  {:<10}  {}{}",
            row.index,
            row.kind.label(),
            row.callee,
            if row.survived { "survived" } else { "DROPPED" },
            ms(row.gap),
            row.before,
            row.after,
            turn_col(row.at_failure.map_or("-", AtFailure::label)),
            row.note
        );
    }
    let s = &r.summary;
    let pausing = if r.turns.is_some() {
        format!(
            ", {} of them in a pause when it failed",
            s.on_failed_pausing
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "\n{} of {} calls survived {} ({} on the failed endpoint: {} survived, {} dropped{pausing}); re-route gap p50 {} ms, p99 {} ms, max {} ms",
        s.survived, s.placed, r.scenario, s.on_failed, s.on_failed_survived, s.on_failed_dropped,
        ms(s.gap_p50), ms(s.gap_p99), ms(s.gap_max)
    );
    if s.failover_max.is_some() {
        let _ = writeln!(
            out,
            "outbound calls after the failure connected in p50 {} ms, max {} ms (failover included)",
            ms(s.failover_p50),
            ms(s.failover_max)
        );
    }
    if let Some(l) = LivenessChecks::shown(r) {
        let _ = writeln!(
            out,
            "holdfast checked AI legs that fell silent {} times: {} alive (kept), {} gone, {} unconfirmed",
            l.started, l.alive, l.failed, l.unconfirmed
        );
    }
    out
}

/// The postmortem.
pub fn render_markdown(r: &Report) -> String {
    let s = &r.summary;
    let mut out = String::new();
    let verdict = if r.passed() {
        "PASSED: every call survived"
    } else {
        "FAILED: calls dropped"
    };
    let _ = writeln!(out, "# holdfast drill: {}\n", r.scenario);
    let _ = writeln!(
        out,
        "Started {} UTC. {} calls, hold {} after the failure. **{verdict}** ({} of {} survived).\n",
        r.started_utc,
        s.placed,
        secs(r.hold),
        s.survived,
        s.placed
    );
    let _ = writeln!(out, "{}\n", r.speech());
    let _ = writeln!(out, "## Timeline\n");
    let _ = writeln!(out, "| t | event |\n| ---: | --- |");
    for e in &r.timeline {
        let _ = writeln!(out, "| +{} | {} |", secs(e.at), e.text.replace('|', "\\|"));
    }
    let _ = writeln!(out, "\n## Blast radius\n");
    let _ = writeln!(
        out,
        "- calls placed: {}, connected: {}\n- calls on the failed endpoint: {}\n- of those survived: {}\n- of those dropped: {}\n- dropped overall: {}",
        s.placed, s.connected, s.on_failed, s.on_failed_survived, s.on_failed_dropped, s.dropped
    );
    if r.turns.is_some() {
        let _ = writeln!(
            out,
            "- calls on the failed endpoint whose caller was in a pause when it failed: {}",
            s.on_failed_pausing
        );
    }
    let _ = writeln!(out, "\n## Figures\n");
    let _ = writeln!(out, "| figure | value |\n| --- | ---: |");
    for (name, v) in [
        ("re-route gap p50 (ms)", s.gap_p50),
        ("re-route gap p99 (ms)", s.gap_p99),
        ("re-route gap max (ms)", s.gap_max),
        ("call setup p50 (ms)", s.setup_p50),
        ("call setup max (ms)", s.setup_max),
        ("setup after the failure p50 (ms)", s.failover_p50),
        ("setup after the failure max (ms)", s.failover_max),
    ] {
        if v.is_some() || name.starts_with("re-route") {
            let _ = writeln!(out, "| {name} | {} |", ms(v));
        }
    }
    if let Some(l) = LivenessChecks::shown(r) {
        for (name, v) in [
            ("liveness checks of silent AI legs", l.started),
            ("… found alive (call kept)", l.alive),
            ("… found gone", l.failed),
            ("… unconfirmed (call kept)", l.unconfirmed),
        ] {
            let _ = writeln!(out, "| {name} | {v} |");
        }
    }
    let _ = writeln!(out, "\n## Calls\n");
    let (head, rule) = if r.turns.is_some() {
        (" at failure |", " --- |")
    } else {
        ("", "")
    };
    let _ = writeln!(
        out,
        "| call | kind | callee | result | gap ms | before | after |{head} Call-ID | note |\n| ---: | --- | --- | --- | ---: | --- | --- |{rule} --- | --- |"
    );
    for row in &r.rows {
        let at = if r.turns.is_some() {
            format!(" {} |", row.at_failure.map_or("-", AtFailure::label))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |{at} `{}` | {} |",
            row.index,
            row.kind.label(),
            row.callee,
            if row.survived {
                "survived"
            } else {
                "**dropped**"
            },
            ms(row.gap),
            row.before,
            row.after,
            row.call_id,
            row.note.replace('|', "\\|")
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

fn opt_ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_millis() as u64))
}

/// The `--json` document.
pub fn to_json(r: &Report) -> Value {
    let s = &r.summary;
    json!({
        "scenario": r.scenario,
        "started_utc": r.started_utc,
        "passed": r.passed(),
        "hold_ms": r.hold.as_millis() as u64,
        "speech": match r.turns {
            Some(t) => json!({
                "mode": "turns", "talk_ms": t.talk.as_millis() as u64,
                "pause_ms": t.pause.as_millis() as u64,
                "caller_silence_ms": r.caller_silence.as_millis() as u64,
            }),
            None => json!({
                "mode": "continuous",
                "caller_silence_ms": r.caller_silence.as_millis() as u64,
            }),
        },
        "summary": {
            "placed": s.placed, "connected": s.connected, "survived": s.survived,
            "dropped": s.dropped, "on_failed": s.on_failed,
            "on_failed_survived": s.on_failed_survived, "on_failed_dropped": s.on_failed_dropped,
            "on_failed_pausing": s.on_failed_pausing,
            "gap_p50_ms": opt_ms(s.gap_p50), "gap_p99_ms": opt_ms(s.gap_p99),
            "gap_max_ms": opt_ms(s.gap_max), "setup_p50_ms": opt_ms(s.setup_p50),
            "setup_max_ms": opt_ms(s.setup_max), "failover_p50_ms": opt_ms(s.failover_p50),
            "failover_max_ms": opt_ms(s.failover_max),
        },
        "calls": r.rows.iter().map(|row| json!({
            "index": row.index, "kind": row.kind.label(), "callee": row.callee,
            "call_id": row.call_id, "survived": row.survived, "gap_ms": opt_ms(row.gap),
            "before": row.before, "after": row.after, "on_failed": row.on_failed,
            "at_failure": row.at_failure.map(AtFailure::label),
            "heard_between_turns": row.between_turns,
            "note": row.note,
        })).collect::<Vec<_>>(),
        "liveness_checks": r.liveness.map(|l| json!({
            "started": l.started, "alive": l.alive, "failed": l.failed,
            "unconfirmed": l.unconfirmed,
        })),
        "timeline": r.timeline.iter().map(|e| json!({
            "at_ms": e.at.as_millis() as u64, "event": e.text,
        })).collect::<Vec<_>>(),
        "notes": r.notes,
    })
}

/// `YYYY-MM-DD HH:MM:SS` and `YYYYMMDD-HHMMSS` for seconds since the Unix epoch (UTC), by
/// the civil-from-days algorithm (no time-zone database needed).
pub fn utc_stamps(unix_secs: u64) -> (String, String) {
    let sod = unix_secs % 86_400;
    let (h, mi, se) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let (y, m, d) = crate::runtime::wallclock::civil_from_days((unix_secs / 86_400) as i64);
    (
        format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{se:02}"),
        format!("{y:04}{m:02}{d:02}-{h:02}{mi:02}{se:02}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn ctx() -> Context {
        Context {
            failure_at: d(2000),
            end_at: d(6000),
            peers: vec![
                "-".into(),
                "agent-a".into(),
                "agent-b".into(),
                "carrier-b".into(),
            ],
            primary_carrier: "carrier-a".into(),
            failed: vec!["agent-a".into()],
            quiet: false,
        }
    }

    /// Echoes every 20 ms from `from` to `to` (exclusive) from `peer`.
    fn stream(from: u64, to: u64, peer: u8) -> Vec<(Duration, u8)> {
        (from..to).step_by(20).map(|t| (d(t), peer)).collect()
    }

    fn call(index: u16, echoes: Vec<(Duration, u8)>) -> CallResult {
        CallResult {
            index,
            kind: CallKind::InboundSip,
            callee: format!("+1555100{index:04}"),
            call_id: format!("c{index}"),
            placed_at: d(100),
            setup: Some(d(15)),
            setup_error: None,
            // Talking continuously from the answer to the end of the hold.
            talk: vec![(d(115), d(6000))],
            echoes,
            crossed: 0,
            sent: 250,
            remote_bye_at: None,
            bye_status: Some(200),
        }
    }

    #[test]
    fn a_rerouted_call_survives_with_its_gap_and_both_providers() {
        let mut e = stream(200, 2010, 1);
        e.extend(stream(2350, 6000, 2));
        let row = analyze(&call(1, e), &ctx());
        assert!(row.survived, "{row:?}");
        assert_eq!(
            (row.before.as_str(), row.after.as_str()),
            ("agent-a", "agent-b")
        );
        assert_eq!(row.gap, Some(d(350)));
        assert!(row.on_failed);
        assert_eq!(row.note, "");
    }

    #[test]
    fn drops_are_explained() {
        let c = ctx();
        let mut hung = call(2, stream(200, 2000, 1));
        hung.remote_bye_at = Some(d(3100));
        hung.bye_status = None;
        let row = analyze(&hung, &c);
        assert!(!row.survived);
        assert_eq!(row.note, "hung up by holdfast at t+3.100s");
        assert_eq!(row.gap, None, "a dropped call has no gap");
        assert_eq!(row.after, "-");
        assert_eq!(
            gap_after(&hung.echoes, &hung.talk, c.failure_at, c.end_at),
            Some(d(4000)),
            "silent from the failure to the end"
        );

        let silent = analyze(&call(3, stream(200, 4000, 1)), &c);
        assert!(!silent.survived);
        assert_eq!(silent.note, "no audio since t+3.980s");

        let mut unanswered = call(4, stream(200, 6000, 2));
        unanswered.bye_status = None;
        assert!(!analyze(&unanswered, &c).survived);

        let mut refused = call(5, vec![]);
        refused.setup = None;
        refused.setup_error = Some("503 Service Unavailable".into());
        let row = analyze(&refused, &c);
        assert!(!row.survived);
        assert_eq!(row.note, "not connected: 503 Service Unavailable");

        let mut crossed = call(6, stream(200, 6000, 2));
        crossed.crossed = 3;
        assert!(!analyze(&crossed, &c).survived, "cross-talk is a failure");
    }

    #[test]
    fn outbound_rows_show_the_setup_time_and_who_answered() {
        let mut c = call(7, stream(2500, 6000, 3));
        c.kind = CallKind::Outbound;
        c.setup = Some(d(1012));
        let mut cx = ctx();
        cx.failed = vec!["carrier-a".into()];
        let row = analyze(&c, &cx);
        assert!(row.survived);
        assert_eq!(
            (row.before.as_str(), row.after.as_str()),
            ("carrier-a", "carrier-b")
        );
        assert_eq!(row.gap, Some(d(1012)));
        assert!(row.on_failed);
    }

    #[test]
    fn summary_percentiles_and_blast_radius() {
        let c = ctx();
        let mut results = Vec::new();
        for (i, gap) in [100u64, 200, 300, 400].into_iter().enumerate() {
            let mut e = stream(200, 2000, 1);
            e.extend(stream(1980 + gap, 6000, 2));
            results.push(call(i as u16, e));
        }
        let mut dropped = call(9, stream(200, 2000, 1));
        dropped.remote_bye_at = Some(d(2500));
        results.push(dropped);
        let rows: Vec<Row> = results.iter().map(|r| analyze(r, &c)).collect();
        let s = summarize(&rows, &results);
        assert_eq!((s.placed, s.survived, s.dropped), (5, 4, 1));
        assert_eq!(
            (s.on_failed, s.on_failed_survived, s.on_failed_dropped),
            (5, 4, 1)
        );
        assert_eq!(s.gap_p50, Some(d(200)));
        assert_eq!(s.gap_max, Some(d(400)));
        assert_eq!(s.gap_p99, Some(d(400)), "the dropped call has no gap");
        assert_eq!(s.setup_max, Some(d(15)));
        assert_eq!(percentile(&[d(1)], 99), Some(d(1)));
        assert_eq!(percentile(&[], 50), None);

        let ev = reroute_events(&results, &c);
        assert_eq!(ev.len(), 5);
        assert!(
            ev[0].text.contains("audio from agent-b (was agent-a)"),
            "{ev:?}"
        );
        let report = Report {
            scenario: "ai-provider (SIGKILL agent-a)".into(),
            started_utc: "2025-01-01 00:00:00".into(),
            rows,
            summary: s,
            timeline: ev,
            notes: vec!["a note".into()],
            hold: d(4000),
            turns: None,
            caller_silence: Duration::ZERO,
            liveness: None,
        };
        assert!(!report.passed());
        let md = render_markdown(&report);
        for section in [
            "## Timeline",
            "## Blast radius",
            "## Figures",
            "## Calls",
            "## Notes",
        ] {
            assert!(md.contains(section), "{section} missing:\n{md}");
        }
        assert!(md.contains("| re-route gap p50 (ms) | 200 |"), "{md}");
        let table = render_table(&report);
        assert_eq!(table.matches("  survived  ").count(), 4, "{table}");
        assert_eq!(table.matches("DROPPED").count(), 1);
        let j = to_json(&report);
        assert_eq!(j["summary"]["dropped"], 1);
        assert_eq!(j["calls"][0]["before"], "agent-a");
        assert_eq!(j["passed"], false);
    }

    /// A caller in turns (`--quiet-agents`): `talk` spurts, agent `peer`'s echoes of them.
    fn quiet_call(index: u16, talk: &[(u64, u64)], echoes: Vec<(Duration, u8)>) -> CallResult {
        let mut c = call(index, echoes);
        c.placed_at = d(0);
        c.talk = talk.iter().map(|&(a, b)| (d(a), d(b))).collect();
        c
    }

    #[test]
    fn callers_in_turns_are_judged_by_what_they_said() {
        // The failure at 9 s, the hang-up at 17 s, silence from 14 s.
        let cx = Context {
            failure_at: d(9000),
            end_at: d(17000),
            quiet: true,
            ..ctx()
        };
        // Talking at the failure: agent-b answers 70 ms after agent-a's last echo.
        let mut e = stream(20, 2000, 1);
        e.extend(stream(8020, 9000, 1));
        e.extend(stream(9050, 10000, 2));
        let talking = quiet_call(1, &[(0, 2000), (8000, 10000)], e);
        let row = analyze(&talking, &cx);
        assert!(row.survived, "{row:?}");
        assert_eq!(row.at_failure, Some(AtFailure::Talking));
        assert_eq!(row.gap, Some(d(70)), "the 6 s pause before is no gap");
        assert_eq!(
            (row.before.as_str(), row.after.as_str()),
            ("agent-a", "agent-b")
        );

        // Pausing at the failure, re-routed during the pause: its next spurt is heard at once.
        let mut e = stream(4001, 6000, 1);
        e.extend(stream(12001, 14000, 2));
        let pausing = quiet_call(2, &[(4000, 6000), (12000, 14000)], e);
        let row = analyze(&pausing, &cx);
        assert!(
            row.survived,
            "silent for its last 3 s and still up: {row:?}"
        );
        assert_eq!(row.at_failure, Some(AtFailure::Pausing));
        assert_eq!(row.gap, Some(d(20)), "{row:?}");
        assert_eq!(row.after, "agent-b");
        assert_eq!(row.between_turns, 0);

        // Its agent died in the pause and nobody answers its next spurt.
        let dead = quiet_call(3, &[(4000, 6000), (12000, 14000)], stream(4001, 6000, 1));
        let row = analyze(&dead, &cx);
        assert!(!row.survived);
        assert_eq!(
            row.note,
            "no audio since t+5.981s (2019 ms of its talk unheard)"
        );
        assert_eq!(
            gap_after(&dead.echoes, &dead.talk, cx.failure_at, cx.end_at),
            Some(d(2000)),
            "only its talk after the failure is missing"
        );

        // Heard before the failure only, in the spurt the failure cut.
        let mut e = stream(20, 2000, 1);
        e.extend(stream(8020, 9000, 1));
        let cut = quiet_call(4, &[(0, 2000), (8000, 10000)], e);
        assert!(
            !analyze(&cut, &cx).survived,
            "its echoes before the failure do not count"
        );

        // Never talked after the failure: cannot be judged, so not a survivor.
        let mute = quiet_call(5, &[(0, 2000)], stream(20, 2000, 1));
        let row = analyze(&mute, &cx);
        assert!(!row.survived);
        assert!(
            row.note.contains("did not talk after the failure"),
            "{}",
            row.note
        );
        // Hung up before the failure: neither talking nor pausing at it.
        let mut early = quiet_call(7, &[(0, 2000)], stream(20, 2000, 1));
        early.remote_bye_at = Some(d(3000));
        assert_eq!(analyze(&early, &cx).at_failure, None);

        // An agent that talks while the caller pauses is noted (the drill then proves less).
        let mut e = stream(20, 2000, 1);
        e.push((d(5000), 1));
        e.extend(stream(8020, 10000, 1));
        let chatty = analyze(&quiet_call(6, &[(0, 2000), (8000, 10000)], e), &cx);
        assert_eq!(chatty.between_turns, 1);
        assert_eq!(
            chatty.note,
            "1 packets of agent audio while the caller was silent"
        );

        let results = vec![talking, pausing, dead];
        let rows: Vec<Row> = results.iter().map(|r| analyze(r, &cx)).collect();
        let s = summarize(&rows, &results);
        assert_eq!((s.on_failed, s.on_failed_pausing), (3, 2));
        let ev = reroute_events(&results, &cx);
        assert!(
            ev.iter().any(|e| e
                .text
                .contains("audio from agent-b (was agent-a), silent for 20 ms of its talk")),
            "{ev:?}"
        );
        let report = Report {
            scenario: "all".into(),
            started_utc: "2025-01-01 00:00:00".into(),
            rows,
            summary: s,
            timeline: ev,
            notes: vec![],
            hold: d(8000),
            turns: Some(Turns {
                talk: d(2000),
                pause: d(6000),
            }),
            caller_silence: d(3000),
            liveness: Some(LivenessChecks {
                started: 4,
                alive: 4,
                ..LivenessChecks::default()
            }),
        };
        let table = render_table(&report);
        assert!(table.contains("at failure  note"), "{table}");
        assert!(table.contains("  pause       "), "{table}");
        assert!(
            table.contains("2 of them in a pause when it failed"),
            "{table}"
        );
        assert!(
            table.contains("checked AI legs that fell silent 4 times: 4 alive (kept), 0 gone"),
            "{table}"
        );
        let md = render_markdown(&report);
        assert!(
            md.contains("Callers talked in turns (2 s talk spurts, 6 s pauses, silent for the last 3 s before hanging up)"),
            "{md}"
        );
        assert!(md.contains("| at failure |"), "{md}");
        let j = to_json(&report);
        assert_eq!(j["speech"]["mode"], "turns");
        assert_eq!(j["speech"]["pause_ms"], 6000);
        assert_eq!(j["calls"][1]["at_failure"], "pause");
        assert_eq!(j["summary"]["on_failed_pausing"], 2);
        assert_eq!(j["liveness_checks"]["alive"], 4);
    }

    #[test]
    fn utc_stamps_are_civil_dates() {
        assert_eq!(utc_stamps(0).0, "1970-01-01 00:00:00");
        assert_eq!(
            utc_stamps(1_709_210_096),
            ("2024-02-29 12:34:56".into(), "20240229-123456".into())
        );
    }
}
