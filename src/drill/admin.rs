//! `holdfast drill --admin URL`: the drill against a running holdfast. Synthetic calls are
//! sent from `--from` (a carrier `sources` entry of that deployment) to `--sip`, dialling
//! `--to`; the failure is the admin API's `POST /targets/{id}/fail` switch (holdfast treats
//! the target as down and moves live calls off it), lifted with `/restore` afterwards on
//! every path, errors included.
//!
//! Survival here is holdfast's and the signalling's word: the call was not hung up by
//! holdfast before the drill's own BYE, is still listed in `GET /calls` at the end of the
//! hold, and its BYE got 2xx. The re-route gap and the providers before and after come from
//! `GET /calls` (`reroutes[].gap_ms`, `ai_provider`/`carrier`), matched to the drill's calls
//! by `legs.carrier.call_id` = the Call-ID of the drill's INVITE. A real agent does not echo
//! the drill's audio, so audio is not judged here.
//!
//! The parsing and verdicts are plain functions ([`parse_calls`], [`pick_target`],
//! [`admin_row`]); [`run`] is the shell.

use std::collections::HashMap;
use std::net::UdpSocket as StdUdpSocket;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;
use tokio::sync::watch;

use super::http::request;
use super::report::{self, CallKind, CallResult, Event, LivenessChecks, Report, Row};
use super::uac::{CallSpec, Cue, SipSocket};
use super::{finish, unix_now, DrillArgs, FailLayer};

/// What the drill needs from one `CallView` of `GET /calls`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallInfo {
    pub id: String,
    pub state: String,
    /// `legs.carrier.call_id`: for an inbound call, the Call-ID of the carrier's INVITE.
    pub carrier_call_id: Option<String>,
    /// `legs.ai.call_id`: for an outbound call, the Call-ID of the AI agent's INVITE.
    pub ai_call_id: Option<String>,
    pub carrier: Option<String>,
    pub ai_provider: Option<String>,
    pub reroutes: Vec<RerouteInfo>,
}

/// One entry of `reroutes`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RerouteInfo {
    pub trigger: String,
    pub from: String,
    pub to: Option<String>,
    pub gap_ms: Option<u64>,
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// Parses `GET /calls` (`{"calls": [CallView…]}`; a bare array is accepted too). Views
/// that lack an id are skipped; missing optional fields are `None`.
pub fn parse_calls(body: &str) -> Result<Vec<CallInfo>> {
    let v: Value = serde_json::from_str(body).context("GET /calls: not JSON")?;
    let list = v
        .get("calls")
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .ok_or_else(|| anyhow!("GET /calls: no `calls` array"))?;
    Ok(list
        .iter()
        .filter_map(|c| {
            Some(CallInfo {
                id: s(&c["id"])?,
                state: s(&c["state"]).unwrap_or_default(),
                carrier_call_id: s(&c["legs"]["carrier"]["call_id"]),
                ai_call_id: s(&c["legs"]["ai"]["call_id"]),
                carrier: s(&c["carrier"]),
                ai_provider: s(&c["ai_provider"]),
                reroutes: c["reroutes"]
                    .as_array()
                    .map(|rs| {
                        rs.iter()
                            .map(|r| RerouteInfo {
                                trigger: s(&r["trigger"]).unwrap_or_default(),
                                from: s(&r["from"]).unwrap_or_default(),
                                to: s(&r["to"]),
                                gap_ms: r["gap_ms"].as_u64(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// The AI legs' `holdfast_liveness_checks_total` from `GET /metrics` (Prometheus text);
/// results holdfast does not count yet are zero.
pub fn liveness_checks(metrics: &str) -> LivenessChecks {
    let mut l = LivenessChecks::default();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("holdfast_liveness_checks_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        if !labels.split(',').any(|kv| kv == "leg=\"ai\"") {
            continue;
        }
        let Some(n) = value.trim().parse::<f64>().ok().map(|v| v as u64) else {
            continue;
        };
        let result = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("result=\""))
            .map(|r| r.trim_end_matches('"'));
        match result {
            Some("started") => l.started = n,
            Some("alive") => l.alive = n,
            Some("failed") => l.failed = n,
            Some("unconfirmed") => l.unconfirmed = n,
            _ => {}
        }
    }
    l
}

/// The drill's calls among all calls, by the Call-ID of its INVITEs: on the carrier leg for
/// inbound calls, on the AI leg for outbound ones (`--fail carrier`, sent from an AI
/// provider's source).
pub fn ours<'a>(all: &'a [CallInfo], call_ids: &[String]) -> HashMap<String, &'a CallInfo> {
    all.iter()
        .filter_map(|c| {
            [&c.carrier_call_id, &c.ai_call_id]
                .into_iter()
                .flatten()
                .find(|cid| call_ids.contains(cid))
                .map(|cid| (cid.clone(), c))
        })
        .collect()
}

/// The target serving most of the drill's calls: the AI provider, or the carrier when the
/// carrier layer is drilled. Ties go to the name that sorts first.
pub fn pick_target(ours: &HashMap<String, &CallInfo>, layer: FailLayer) -> Option<String> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for c in ours.values() {
        let t = match layer {
            FailLayer::Carrier => c.carrier.as_deref(),
            _ => c.ai_provider.as_deref(),
        };
        if let Some(t) = t {
            *count.entry(t).or_default() += 1;
        }
    }
    let mut v: Vec<(&str, usize)> = count.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.first().map(|(t, _)| t.to_string())
}

/// Verdict for one call of an admin-mode drill: `before`/`after` are the call's views from
/// `GET /calls` right before the failure and at the end of the hold.
pub fn admin_row(
    c: &CallResult,
    before: Option<&CallInfo>,
    after: Option<&CallInfo>,
    target: &str,
    layer: FailLayer,
) -> Row {
    let serving = |i: Option<&CallInfo>| {
        i.and_then(|i| match layer {
            FailLayer::Carrier => i.carrier.clone(),
            _ => i.ai_provider.clone(),
        })
        .unwrap_or_else(|| "-".into())
    };
    let reroute = after.and_then(|a| a.reroutes.iter().rev().find(|r| r.from == target));
    let listed = after.is_some();
    let survived = c.setup.is_some()
        && c.remote_bye_at.is_none()
        && listed
        && c.bye_status.is_some_and(|s| (200..300).contains(&s));
    let note = if let Some(e) = &c.setup_error {
        format!("not connected: {e}")
    } else if let Some(t) = c.remote_bye_at {
        format!("hung up by holdfast at t+{:.3}s", t.as_secs_f64())
    } else if !listed {
        "not in GET /calls at the end of the hold".into()
    } else if !c.bye_status.is_some_and(|s| (200..300).contains(&s)) {
        match c.bye_status {
            Some(s) => format!("the drill's BYE got {s}"),
            None => "the drill's BYE got no answer".into(),
        }
    } else if let Some(r) = reroute {
        format!("re-routed on {}", r.trigger)
    } else {
        String::new()
    };
    Row {
        index: c.index,
        kind: c.kind,
        callee: c.callee.clone(),
        call_id: c.call_id.clone(),
        survived,
        gap: reroute
            .and_then(|r| r.gap_ms)
            .map(Duration::from_millis)
            .filter(|_| survived),
        before: serving(before),
        after: serving(after),
        on_failed: serving(before) == target,
        // The callers talk continuously here, and a real agent's audio is not judged.
        at_failure: None,
        between_turns: 0,
        note,
    }
}

struct Admin {
    url: String,
    token: Option<String>,
}

impl Admin {
    async fn call(&self, method: &str, path: &str) -> Result<(u16, String)> {
        request(&self.url, method, path, self.token.as_deref(), "").await
    }

    async fn calls(&self) -> Result<Vec<CallInfo>> {
        let (st, body) = self.call("GET", "/calls").await?;
        if st != 200 {
            bail!("GET /calls: {st} {body}");
        }
        parse_calls(&body)
    }

    async fn switch(&self, target: &str, action: &str) -> Result<()> {
        let (st, body) = self
            .call("POST", &format!("/targets/{target}/{action}"))
            .await?;
        if st != 200 {
            bail!("POST /targets/{target}/{action}: {st} {body}");
        }
        Ok(())
    }
}

/// Runs the admin-mode drill.
pub fn run(args: &DrillArgs) -> Result<Report> {
    let url = args.admin.clone().ok_or_else(|| anyhow!("--admin URL"))?;
    let sip = args
        .sip
        .ok_or_else(|| anyhow!("--admin needs --sip HOST:PORT (holdfast's SIP address)"))?;
    let from = args.from.ok_or_else(|| {
        anyhow!("--admin needs --from IP:PORT (a carrier `sources` entry to send calls from)")
    })?;
    let to = args
        .to
        .clone()
        .ok_or_else(|| anyhow!("--admin needs --to NUMBER"))?;
    let admin = Admin {
        url,
        token: std::env::var(&args.token_env)
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let sock = StdUdpSocket::bind(from).with_context(|| format!("bind {from}"))?;
    let (started_utc, stamp) = report::utc_stamps(unix_now().0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let r = rt.block_on(async {
        tokio::select! {
            r = drive(args, &admin, sock, sip, &to) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    // Whatever happened, the target is restored (a no-op if it was never failed).
    if let Some(t) = r
        .as_ref()
        .ok()
        .map(|d| d.target.clone())
        .or_else(|| args.fail_target.clone())
    {
        if let Err(e) = rt.block_on(admin.switch(&t, "restore")) {
            eprintln!("drill: could not restore {t}: {e:#}");
        }
    }
    let d = r?;
    let rows: Vec<Row> = d
        .results
        .iter()
        .map(|c| {
            admin_row(
                c,
                d.before.get(&c.call_id),
                d.after.get(&c.call_id),
                &d.target,
                args.fail,
            )
        })
        .collect();
    let summary = report::summarize(&rows, &d.results);
    let report = Report {
        scenario: format!("{} (admin API: fail {})", args.fail.as_str(), d.target),
        started_utc,
        rows,
        summary,
        timeline: d.timeline,
        notes: vec![
            "Drilled through the admin API's fail switch: the target was treated as down by \
             holdfast, not killed. Survival = not hung up by holdfast, still listed in GET \
             /calls at the end of the hold, and the drill's BYE answered 2xx; gaps are \
             holdfast's own measurement (reroutes[].gap_ms). Audio content is not checked \
             (a real agent does not echo the drill's markers)."
                .into(),
        ],
        hold: args.hold,
        turns: None,
        caller_silence: Duration::ZERO,
        liveness: None,
    };
    finish(args, &report, &stamp)?;
    Ok(report)
}

struct Driven {
    target: String,
    results: Vec<CallResult>,
    before: HashMap<String, CallInfo>,
    after: HashMap<String, CallInfo>,
    timeline: Vec<Event>,
}

async fn drive(
    args: &DrillArgs,
    admin: &Admin,
    sock: StdUdpSocket,
    sip: std::net::SocketAddr,
    to: &str,
) -> Result<Driven> {
    let (st, body) = admin.call("GET", "/live").await?;
    if st != 200 {
        bail!("GET /live: {st} {body}");
    }
    let (st, body) = admin.call("GET", "/calls").await?;
    if st == 401 {
        bail!(
            "the admin API refused the token (401); set {} or --token-env",
            args.token_env
        );
    } else if st != 200 {
        bail!("GET /calls: {st} {body}");
    }
    let t0 = Instant::now();
    let sip_sock = SipSocket::start(sock, sip)?;
    let (cue_tx, cue) = watch::channel(Cue::Talk);
    let mut tasks = Vec::new();
    let kind = if args.fail == FailLayer::Carrier {
        CallKind::Outbound
    } else {
        CallKind::InboundSip
    };
    let mut timeline = vec![Event {
        at: t0.elapsed(),
        text: format!("placing {} calls to {to} via {sip}", args.calls),
    }];
    let specs: Vec<CallSpec> = (1..=args.calls)
        .map(|i| CallSpec::new(i, kind, to.to_string()))
        .collect();
    let specs_ids: Vec<String> = specs.iter().map(|s| s.call_id.clone()).collect();
    let sock = |_| sip_sock.clone();
    let up = super::place(
        &specs,
        sock,
        t0,
        t0,
        &cue,
        &mut tasks,
        super::UpWhen::Answered,
    )
    .await;
    timeline.push(Event {
        at: t0.elapsed(),
        text: format!("{up} of {} calls answered", args.calls),
    });
    let call_ids = specs_ids;
    let mut d = Driven {
        target: args.fail_target.clone().unwrap_or_default(),
        results: Vec::new(),
        before: HashMap::new(),
        after: HashMap::new(),
        timeline,
    };
    // The calls are hung up below whatever fails here.
    let r = if up == 0 {
        Err(anyhow!(
            "no call was answered; is --from in a carrier's sources and --to routed?"
        ))
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        fail_and_hold(args, admin, &mut d, &call_ids, t0).await
    };
    let _ = cue_tx.send(Cue::HangUp);
    for t in tasks {
        if let Ok(res) = t.await {
            d.results.push(res);
        }
    }
    d.results.sort_by_key(|r| r.index);
    r?;
    d.timeline.push(Event {
        at: t0.elapsed(),
        text: format!(
            "end: {} BYEs answered",
            d.results
                .iter()
                .filter(|r| r.bye_status == Some(200))
                .count()
        ),
    });
    Ok(d)
}

/// Snapshot, fail, hold, snapshot. The caller restores the target.
async fn fail_and_hold(
    args: &DrillArgs,
    admin: &Admin,
    d: &mut Driven,
    call_ids: &[String],
    t0: Instant,
) -> Result<()> {
    let snapshot = |all: Vec<CallInfo>| -> HashMap<String, CallInfo> {
        ours(&all, call_ids)
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect()
    };
    d.before = snapshot(admin.calls().await?);
    if d.target.is_empty() {
        let refs: HashMap<String, &CallInfo> =
            d.before.iter().map(|(k, v)| (k.clone(), v)).collect();
        d.target = pick_target(&refs, args.fail)
            .ok_or_else(|| anyhow!("none of the drill's calls is listed in GET /calls"))?;
    }
    admin.switch(&d.target, "fail").await?;
    d.timeline.push(Event {
        at: t0.elapsed(),
        text: format!("failure injected: POST /targets/{}/fail", d.target),
    });
    tokio::time::sleep(args.hold).await;
    d.after = snapshot(admin.calls().await?);
    d.timeline.push(Event {
        at: t0.elapsed(),
        text: format!(
            "hold over: {} of the drill's calls listed in GET /calls",
            d.after.len()
        ),
    });
    admin.switch(&d.target, "restore").await?;
    d.timeline.push(Event {
        at: t0.elapsed(),
        text: format!("POST /targets/{}/restore", d.target),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"calls": [
      {"id": "hf-1", "direction": "inbound", "state": "confirmed", "caller": "+1555", "callee": "+1666",
       "rule": "r", "regions": ["us"], "age_ms": 1234, "carrier": "carrier-a", "ai_provider": "agent-b",
       "providers": ["agent-a", "agent-b"],
       "legs": {"carrier": {"call_id": "drill-aa-1", "remote": "127.0.0.1:5091"},
                "ai": {"call_id": null, "remote": "127.0.0.1:5081", "kind": "sip"}},
       "reroutes": [{"trigger": "health_down", "detail": "x", "from": "agent-a", "to": "agent-b",
                     "setup_ms": 12, "gap_ms": 40, "outcome": "answered by agent-b"}],
       "media": {}},
      {"id": "hf-2", "state": "confirmed", "ai_provider": "agent-a",
       "legs": {"carrier": {"call_id": "drill-bb-2"}, "ai": null}, "reroutes": []},
      {"id": "hf-3", "state": "confirmed", "ai_provider": "agent-a",
       "legs": {"carrier": {"call_id": "someone-else"}}, "reroutes": []},
      {"id": "hf-4", "direction": "outbound", "state": "confirmed", "carrier": "carrier-b",
       "legs": {"carrier": {"call_id": "hf-made"}, "ai": {"call_id": "drill-cc-3"}}, "reroutes": []},
      {"state": "no id: skipped"}
    ]}"#;

    #[test]
    fn call_views_are_parsed_and_matched_by_call_id() {
        let all = parse_calls(SAMPLE).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(
            all[0].reroutes,
            vec![RerouteInfo {
                trigger: "health_down".into(),
                from: "agent-a".into(),
                to: Some("agent-b".into()),
                gap_ms: Some(40)
            }]
        );
        assert_eq!(all[1].carrier, None);
        let ids = vec!["drill-aa-1".to_string(), "drill-bb-2".to_string()];
        let o = ours(&all, &ids);
        assert_eq!(o.len(), 2);
        assert_eq!(o["drill-bb-2"].id, "hf-2");
        let out = ours(&all, &["drill-cc-3".to_string()]);
        assert_eq!(
            out["drill-cc-3"].id, "hf-4",
            "outbound: matched on the AI leg"
        );
        // agent-a and agent-b serve one drill call each: the tie goes to agent-a.
        assert_eq!(
            pick_target(&o, FailLayer::AiProvider).as_deref(),
            Some("agent-a")
        );
        assert_eq!(
            pick_target(&o, FailLayer::Carrier).as_deref(),
            Some("carrier-a")
        );
        assert!(parse_calls("[]").unwrap().is_empty());
        assert!(parse_calls("{\"nope\": 1}").is_err());
        assert!(parse_calls("<html>").is_err());
    }

    #[test]
    fn liveness_checks_are_read_from_the_metrics() {
        let text = "# HELP holdfast_liveness_checks_total Liveness checks\n\
            # TYPE holdfast_liveness_checks_total counter\n\
            holdfast_liveness_checks_total{leg=\"ai\",result=\"alive\"} 7\n\
            holdfast_liveness_checks_total{leg=\"ai\",result=\"started\"} 9\n\
            holdfast_liveness_checks_total{leg=\"carrier\",result=\"started\"} 4\n\
            holdfast_liveness_checks_total{leg=\"ai\",result=\"failed\"} 2\n\
            holdfast_liveness_checks_total{leg=\"ai\",result=\"failed\"\n\
            holdfast_reroutes_total 3\n";
        assert_eq!(
            liveness_checks(text),
            LivenessChecks {
                started: 9,
                alive: 7,
                failed: 2,
                unconfirmed: 0
            }
        );
        assert_eq!(liveness_checks(""), LivenessChecks::default());
    }

    #[test]
    fn admin_rows_use_holdfasts_view() {
        let all = parse_calls(SAMPLE).unwrap();
        let before = CallInfo {
            ai_provider: Some("agent-a".into()),
            ..all[0].clone()
        };
        let c = CallResult {
            index: 1,
            kind: CallKind::InboundSip,
            callee: "+1666".into(),
            call_id: "drill-aa-1".into(),
            placed_at: Duration::ZERO,
            setup: Some(Duration::from_millis(20)),
            setup_error: None,
            talk: vec![],
            echoes: vec![],
            crossed: 0,
            sent: 10,
            remote_bye_at: None,
            bye_status: Some(200),
        };
        let row = admin_row(
            &c,
            Some(&before),
            Some(&all[0]),
            "agent-a",
            FailLayer::AiProvider,
        );
        assert!(row.survived);
        assert_eq!(
            (row.before.as_str(), row.after.as_str()),
            ("agent-a", "agent-b")
        );
        assert_eq!(row.gap, Some(Duration::from_millis(40)));
        assert!(row.on_failed);
        assert_eq!(row.note, "re-routed on health_down");

        let gone = admin_row(&c, Some(&before), None, "agent-a", FailLayer::AiProvider);
        assert!(!gone.survived);
        assert_eq!(gone.note, "not in GET /calls at the end of the hold");

        let mut hung = c.clone();
        hung.remote_bye_at = Some(Duration::from_secs(3));
        let row = admin_row(
            &hung,
            Some(&before),
            Some(&all[0]),
            "agent-a",
            FailLayer::AiProvider,
        );
        assert!(!row.survived);
        assert_eq!(row.gap, None);
    }
}
