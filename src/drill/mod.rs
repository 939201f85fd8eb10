//! `holdfast drill`: game day in one command. Proves calls survive failures by starting
//! holdfast (this same binary) on a generated loopback config with its own carriers, SIP AI
//! agents and WebSocket bots (each a `holdfast peer` child process), placing synthetic calls
//! with audio both ways, SIGKILLing one layer's endpoint, holding the calls, and reporting
//! per call whether it survived, the re-route gap and the provider before and after; plus a
//! Markdown postmortem. `--quiet-agents` has the callers talk in turns, so the agents (which
//! only answer what they hear) are silent in every pause, and the failure finds some callers
//! talking and others pausing ([`turns`]). `--admin URL` does the same against a running
//! holdfast through its admin API's `fail` switch.
//!
//! This is a shell (processes, sockets, timers); what it computes lives in plain functions:
//! [`report`] (verdicts, figures, renderings), [`topology`] (the generated config),
//! [`turns`] (how callers talk, when the failure comes), [`tag`] (audio markers),
//! [`holdfast_log`] and [`admin`] (parsing what holdfast says).
//! Never touches anything but loopback in the self-contained mode; every child is killed and
//! reaped on every exit path ([`procs::Child`]).

pub mod admin;
pub mod holdfast_log;
pub mod http;
pub mod peer;
pub mod procs;
pub mod report;
pub mod tag;
pub mod topology;
pub mod turns;
pub mod uac;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, ValueEnum};
use tokio::sync::{mpsc, watch};

use report::{AtFailure, CallKind, CallResult, Context, Event, Report};
use topology::{PeerRole, Topology, PEERS};
use turns::{Slot, Speech, Turns};
use uac::{CallSpec, Cue, Progress, SipSocket};

/// Which layer the drill fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailLayer {
    /// Outbound calls while the primary carrier is dead.
    Carrier,
    /// Inbound calls on a SIP AI agent that dies.
    AiProvider,
    /// Inbound calls on a WebSocket (media-stream) bot that dies.
    AiProviderWs,
    /// All of the above at once.
    All,
}

impl FailLayer {
    fn as_str(self) -> &'static str {
        match self {
            FailLayer::Carrier => "carrier",
            FailLayer::AiProvider => "ai-provider",
            FailLayer::AiProviderWs => "ai-provider-ws",
            FailLayer::All => "all",
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// `holdfast drill`.
#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// The layer to fail: its primary endpoint is SIGKILLed (or, with --admin, failed
    /// through the admin API).
    #[arg(long, value_enum, default_value_t = FailLayer::AiProvider)]
    pub fail: FailLayer,
    /// Number of synthetic calls.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=2000))]
    pub calls: u16,
    /// How long the calls stay up after the failure (e.g. 8s, 1m).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Callers talk in turns, like people (talk spurts and pauses longer than the default
    /// media.ai_timeout), and fall silent before they hang up; the agents, which only answer
    /// what they hear, are silent in every pause, as agents with voice activity detection
    /// are. The failure finds some callers talking and others in a pause.
    #[arg(long, conflicts_with = "admin")]
    pub quiet_agents: bool,
    /// With --quiet-agents: how long each talk spurt lasts.
    #[arg(long, default_value = "2s", value_parser = parse_duration, requires = "quiet_agents")]
    pub talk: Duration,
    /// With --quiet-agents: how long callers pause between talk spurts.
    #[arg(long, default_value = "6s", value_parser = parse_duration, requires = "quiet_agents")]
    pub pause: Duration,
    /// How long the callers say nothing before they hang up [default: 3s with
    /// --quiet-agents, else 0s].
    #[arg(long, value_parser = parse_duration, conflicts_with = "admin")]
    pub caller_silence: Option<Duration>,
    /// Kill every endpoint of the layer, not just the primary: an unsurvivable failure (the
    /// drill then reports the drops and exits 1).
    #[arg(long)]
    pub whole_layer: bool,
    /// Where to write the Markdown postmortem [default: ./drill-<UTC timestamp>.md].
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Keep the temporary directory (generated config, holdfast's and the peers' logs).
    #[arg(long)]
    pub keep_dir: bool,
    /// Print the result as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Drill a running holdfast through its admin API at this URL (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Environment variable holding the admin API's bearer token.
    #[arg(long, default_value = "HOLDFAST_ADMIN_TOKEN", value_name = "NAME")]
    pub token_env: String,
    /// With --admin: holdfast's SIP address (UDP).
    #[arg(long, value_name = "HOST:PORT", requires = "admin")]
    pub sip: Option<SocketAddr>,
    /// With --admin: the local address to send calls from; must be in a carrier's `sources`
    /// (in an AI provider's `sources` with --fail carrier: the calls are then outbound).
    #[arg(long, value_name = "IP:PORT", requires = "admin")]
    pub from: Option<SocketAddr>,
    /// With --admin: the number every synthetic call dials.
    #[arg(long, value_name = "NUMBER", requires = "admin")]
    pub to: Option<String>,
    /// With --admin: the target to fail [default: the AI provider serving most drill calls].
    #[arg(long, value_name = "ID", requires = "admin")]
    pub fail_target: Option<String>,
}

/// `holdfast peer` (hidden): one endpoint of a drill, run as its own process.
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    #[arg(value_enum)]
    pub role: PeerRoleArg,
    /// Stamped into every echoed payload.
    #[arg(long, default_value_t = 1)]
    pub index: u8,
    /// Name used in SIP Contact and To tags.
    #[arg(long, default_value = "peer")]
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerRoleArg {
    SipAgent,
    WsBot,
}

/// Entry point of `holdfast peer`.
pub fn peer_main(args: PeerArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match args.role {
            PeerRoleArg::SipAgent => peer::sip_agent(args.index, &args.name).await,
            PeerRoleArg::WsBot => peer::ws_bot(args.index).await,
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer {}: {e:#}", args.name);
            ExitCode::FAILURE
        }
    }
}

impl DrillArgs {
    /// The callers' turns, with `--quiet-agents`.
    pub fn turns(&self) -> Option<Turns> {
        self.quiet_agents.then_some(Turns {
            talk: self.talk,
            pause: self.pause,
        })
    }

    /// `--caller-silence`, or its default.
    pub fn caller_silence(&self) -> Duration {
        self.caller_silence.unwrap_or(if self.quiet_agents {
            turns::DEFAULT_CALLER_SILENCE
        } else {
            Duration::ZERO
        })
    }

    /// Refuses turns and holds the drill could not judge.
    pub fn check(&self) -> Result<()> {
        if self.quiet_agents {
            for (flag, d) in [("--talk", self.talk), ("--pause", self.pause)] {
                if d < turns::MIN_TURN {
                    bail!("{flag} {d:?} is too short: at least {:?}", turns::MIN_TURN);
                }
            }
        }
        let min = turns::min_hold(self.turns(), self.caller_silence());
        if self.admin.is_none() && self.hold < min {
            let why = if self.quiet_agents {
                "every caller must talk again after the failure (a caller half-way through \
                 its pause waits half a --pause, then talks for --talk) and then be silent \
                 for --caller-silence"
            } else {
                "the callers must talk for 2 s after the failure before --caller-silence"
            };
            bail!(
                "--hold {:?} is too short to judge the calls: {why}; use --hold {:?} or more",
                self.hold,
                min
            );
        }
        Ok(())
    }
}

/// Entry point of `holdfast drill`: 0 when every call survived, 1 when any dropped, 2 when
/// the drill itself could not run.
pub fn drill_main(args: DrillArgs) -> ExitCode {
    if let Err(e) = args.check() {
        eprintln!("drill: {e:#}");
        return ExitCode::from(2);
    }
    let r = if args.admin.is_some() {
        admin::run(&args)
    } else {
        run_local(&args)
    };
    match r {
        Ok(report) => {
            if args.json {
                println!("{}", report::to_json(&report));
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("drill: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A temporary directory, removed on drop unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn new(keep: bool) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!(
            "holdfast-drill-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(TempDir { path, keep })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Which calls the drill places and which endpoints it kills.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Placed and brought up before the failure.
    pub before: Vec<CallSpec>,
    /// Placed right after the failure.
    pub after: Vec<CallSpec>,
    /// Peers SIGKILLed (or targets failed), by name.
    pub kill: Vec<String>,
}

impl PartialEq for CallSpec {
    fn eq(&self, o: &Self) -> bool {
        (self.index, self.kind, &self.callee, self.speech) == (o.index, o.kind, &o.callee, o.speech)
    }
}

/// The calls and failures of a drill. With `turns`, the calls of each kind placed before
/// the failure are dealt in turn to the [`Slot`]s (talking, mid-pause, end of a pause at the
/// failure) and the calls placed after it talk first when answered.
pub fn plan(layer: FailLayer, calls: u16, whole_layer: bool, turns: Option<Turns>) -> Plan {
    let spec = |index: u16, kind: CallKind, nth: usize| {
        let prefix = match kind {
            CallKind::InboundSip => topology::INBOUND_SIP_PREFIX,
            CallKind::InboundWs => topology::INBOUND_WS_PREFIX,
            CallKind::Outbound => topology::OUTBOUND_PREFIX,
        };
        let mut s = CallSpec::new(index, kind, format!("{prefix}{index:04}"));
        if let Some(turns) = turns {
            s.speech = match kind {
                CallKind::Outbound => Speech::Turns {
                    turns,
                    offset: Duration::ZERO,
                    from_answer: true,
                },
                _ => Speech::Turns {
                    turns,
                    offset: turns.offset(Slot::ALL[nth % Slot::ALL.len()]),
                    from_answer: false,
                },
            };
        }
        s
    };
    let (sip, ws, out) = match layer {
        FailLayer::AiProvider => (calls, 0, 0),
        FailLayer::AiProviderWs => (0, calls, 0),
        FailLayer::Carrier => (0, 0, calls),
        FailLayer::All => {
            let third = calls / 3;
            let sip = calls - 2 * third;
            (sip, third, third)
        }
    };
    let mut p = Plan {
        before: Vec::new(),
        after: Vec::new(),
        kill: Vec::new(),
    };
    let mut i = 0u16;
    for (n, kind) in [(sip, CallKind::InboundSip), (ws, CallKind::InboundWs)] {
        for nth in 0..usize::from(n) {
            i += 1;
            p.before.push(spec(i, kind, nth));
        }
    }
    for nth in 0..usize::from(out) {
        i += 1;
        p.after.push(spec(i, CallKind::Outbound, nth));
    }
    let layers: &[(&str, &str, bool)] = &[
        ("agent-a", "agent-b", sip > 0),
        ("bot-a", "bot-b", ws > 0),
        ("carrier-a", "carrier-b", out > 0),
    ];
    for (primary, backup, used) in layers {
        if *used {
            p.kill.push(primary.to_string());
            if whole_layer {
                p.kill.push(backup.to_string());
            }
        }
    }
    p
}

fn unix_now() -> (u64, f64) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        d.as_secs(),
        (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_micros()) / 1e6,
    )
}

fn default_report_path(stamp: &str) -> PathBuf {
    PathBuf::from(format!("drill-{stamp}.md"))
}

/// Writes the postmortem and prints the table (unless `--json`) and where the report is.
fn finish(args: &DrillArgs, report: &Report, stamp: &str) -> Result<()> {
    let path = args
        .report
        .clone()
        .unwrap_or_else(|| default_report_path(stamp));
    std::fs::write(&path, report::render_markdown(report))
        .with_context(|| format!("write {}", path.display()))?;
    if !args.json {
        print!("{}", report::render_table(report));
        println!("postmortem: {}", path.display());
    } else {
        eprintln!("postmortem: {}", path.display());
    }
    Ok(())
}

/// The self-contained drill.
fn run_local(args: &DrillArgs) -> Result<Report> {
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = TempDir::new(args.keep_dir)?;
    let (started_utc, stamp) = report::utc_stamps(unix_now().0);
    let plan = plan(args.fail, args.calls, args.whole_layer, args.turns());

    // Peers, each its own process (so it can be SIGKILLed), reporting its own port.
    let mut peers: HashMap<String, procs::Child> = HashMap::new();
    let mut peer_addrs = Vec::new();
    for (i, (name, role)) in PEERS.iter().enumerate() {
        let idx = u8::try_from(i + 1).unwrap_or(u8::MAX);
        let log = dir.path.join(format!("{name}.log"));
        let (child, addr) = procs::spawn_peer(&exe, name, role.arg(), idx, &log)?;
        peers.insert(name.to_string(), child);
        peer_addrs.push(addr);
    }
    debug_assert!(PEERS.iter().any(|(_, r)| *r == PeerRole::WsBot));

    // The caller's SIP sockets: bound now, their addresses go into `sources`.
    let caller_in = StdUdpSocket::bind("127.0.0.1:0").context("bind caller")?;
    let caller_out = StdUdpSocket::bind("127.0.0.1:0").context("bind caller")?;
    let sip = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
    let topo = Topology {
        sip,
        media_ports: procs::free_port_window(200, rand::random())?,
        admin: SocketAddr::from(([127, 0, 0, 1], procs::free_port()?)),
        records_path: dir.path.join("calls.jsonl"),
        caller_in: caller_in.local_addr()?,
        caller_out: caller_out.local_addr()?,
        peers: peer_addrs,
    };
    let config_path = dir.path.join("drill.yaml");
    let ai_timeout = topology::ai_timeout(&topo);
    std::fs::write(
        &config_path,
        topology::config_yaml(&topo, topology::admin_supported()),
    )
    .context("write the drill config")?;
    let token = format!("{:032x}", rand::random::<u128>());
    let log_path = dir.path.join("holdfast.log");
    let mut holdfast = procs::spawn_holdfast(
        &exe,
        &config_path,
        &log_path,
        &[(topology::TOKEN_ENV, token.as_str())],
    )?;
    {
        let mut pids: Vec<String> = PEERS
            .iter()
            .filter_map(|(n, _)| peers.get(*n).map(|c| format!("{n} {}", c.pid())))
            .collect();
        pids.sort();
        eprintln!(
            "drill: holdfast (pid {}) on udp:{sip}, peers (pid {}), {} calls, failing {}{}; logs in {}",
            holdfast.pid(),
            pids.join(", "),
            args.calls,
            plan.kill.join(" + "),
            if args.whole_layer { " (whole layer)" } else { "" },
            dir.path.display()
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let t0 = Instant::now();
    let t0_sod = unix_now().1;
    let outcome = rt.block_on(async {
        tokio::select! {
            r = drive(args, &plan, caller_in, caller_out, sip, &mut peers, t0) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    let Driven {
        results,
        ctx,
        mut timeline,
        mut notes,
    } = outcome?;
    // holdfast's own count of the checks its silent AI legs got.
    let liveness = if topology::admin_supported() {
        let base = format!("http://{}", topo.admin);
        match rt.block_on(http::request(&base, "GET", "/metrics", Some(&token), "")) {
            Ok((200, body)) => Some(admin::liveness_checks(&body)),
            _ => None,
        }
    } else {
        None
    };
    drop(rt);

    if let Some(status) = holdfast.try_exited() {
        notes.push(format!(
            "holdfast exited during the drill ({status}): see its log"
        ));
    }
    holdfast.kill()?;
    drop(peers);

    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let (reroutes, log_events) = holdfast_log::read(&log_text, t0_sod, &ctx.failed);
    // Health news from before the failure is start-up noise.
    timeline.extend(log_events.into_iter().filter(|e| e.at >= ctx.failure_at));
    timeline.extend(report::reroute_events(&results, &ctx));
    timeline.sort_by_key(|e| e.at);

    let mut rows: Vec<report::Row> = results.iter().map(|c| report::analyze(c, &ctx)).collect();
    for row in &mut rows {
        let triggers: Vec<String> = reroutes
            .iter()
            .filter(|r| r.callee == row.callee)
            .map(|r| format!("{} ({}→{})", r.trigger, r.from, r.to))
            .collect();
        if !triggers.is_empty() {
            let t = format!("re-routed on {}", triggers.join(", "));
            row.note = if row.note.is_empty() {
                t
            } else {
                format!("{}; {t}", row.note)
            };
        }
    }
    let summary = report::summarize(&rows, &results);
    if let Some(turns) = args.turns() {
        let at = |a| rows.iter().filter(|r| r.at_failure == Some(a)).count();
        timeline.push(Event {
            at: ctx.failure_at,
            text: format!(
                "at the failure {} callers were talking and {} in a pause",
                at(AtFailure::Talking),
                at(AtFailure::Pausing)
            ),
        });
        timeline.sort_by_key(|e| e.at);
        notes.push(
            "Quiet agents: the callers talked in turns and every peer only answers what it \
             hears, so the agents were silent whenever their caller paused, as agents with \
             voice activity detection are. Survived = heard its agent after the failure in \
             its last talk spurt (no more than 1 s of its talk unheard at the end of it); the \
             gap is the caller's own talk that went unheard around the switch, pauses \
             excluded."
                .into(),
        );
        match ai_timeout {
            Some(t) if turns.pause <= t => notes.push(format!(
                "The pauses ({:?}) are not longer than holdfast's media.ai_timeout ({t:?}): \
                 no agent was silent long enough to be checked.",
                turns.pause
            )),
            _ => {}
        }
    }
    if plan.kill.iter().any(|k| k.starts_with("carrier")) {
        notes.push(
            "Carrier failure: a carrier's half of a call in progress dies with the carrier (no \
             proxy can keep a call the PSTN side has lost), so the drill kills the primary \
             carrier first and then places the outbound calls. What holdfast controls is \
             measured: every new call must still connect, through the next carrier, within \
             the failover bound; the gap column shows the call's setup time (INVITE → 200)."
                .into(),
        );
    }
    if args.whole_layer {
        notes.push(
            "--whole-layer: every endpoint of the layer was killed; this failure is not \
             survivable and the drops are expected."
                .into(),
        );
    }
    if args.keep_dir {
        notes.push(format!(
            "Config, holdfast's log and the peers' logs are kept in {}.",
            dir.path.display()
        ));
    }
    let report = Report {
        scenario: format!("{} (SIGKILL {})", args.fail.as_str(), plan.kill.join(" + ")),
        started_utc,
        rows,
        summary,
        timeline,
        notes,
        hold: args.hold,
        turns: args.turns(),
        caller_silence: args.caller_silence(),
        liveness,
    };
    finish(args, &report, &stamp)?;
    Ok(report)
}

/// When a placed call counts as up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpWhen {
    /// Its peer's marked audio came back (the drill's own peers echo it).
    Audio,
    /// It was answered (a real agent's audio carries no marker).
    Answered,
}

/// Places calls (paced 10 ms apart), then waits until each is up or over, for at most
/// the setup limit (plus the longest a caller waits for its first talk spurt after `epoch`).
/// Returns how many are up.
pub(crate) async fn place(
    specs: &[CallSpec],
    sock: impl Fn(CallKind) -> Arc<SipSocket>,
    t0: Instant,
    epoch: Instant,
    cue: &watch::Receiver<Cue>,
    tasks: &mut Vec<tokio::task::JoinHandle<CallResult>>,
    up_when: UpWhen,
) -> usize {
    let (tx, mut rx) = mpsc::unbounded_channel();
    for s in specs {
        tasks.push(tokio::spawn(uac::run_call(
            s.clone(),
            sock(s.kind),
            t0,
            epoch,
            tx.clone(),
            cue.clone(),
        )));
        // Paced like real traffic, not one burst.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(tx);
    let mut up = 0;
    let mut done = 0;
    let lead_in = specs
        .iter()
        .map(|s| s.speech.first_talk())
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::from_std(epoch.max(Instant::now()))
        + uac::SETUP_LIMIT
        + Duration::from_secs(2)
        + lead_in;
    while done < specs.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Progress::Audio(_))) if up_when == UpWhen::Audio => {
                up += 1;
                done += 1;
            }
            Ok(Some(Progress::Connected(_))) if up_when == UpWhen::Answered => {
                up += 1;
                done += 1;
            }
            Ok(Some(Progress::Over(_))) => done += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    up
}

/// What [`drive`] saw.
struct Driven {
    results: Vec<CallResult>,
    ctx: Context,
    timeline: Vec<Event>,
    notes: Vec<String>,
}

async fn drive(
    args: &DrillArgs,
    plan: &Plan,
    caller_in: StdUdpSocket,
    caller_out: StdUdpSocket,
    sip: SocketAddr,
    peers: &mut HashMap<String, procs::Child>,
    t0: Instant,
) -> Result<Driven> {
    let sock_in = SipSocket::start(caller_in, sip)?;
    let sock_out = SipSocket::start(caller_out, sip)?;
    let pick = |k: CallKind| {
        if k == CallKind::Outbound {
            sock_out.clone()
        } else {
            sock_in.clone()
        }
    };
    let mut timeline = vec![Event {
        at: t0.elapsed(),
        text: format!("holdfast and {} peers up", peers.len()),
    }];
    let (cue_tx, cue) = watch::channel(Cue::Talk);
    let mut tasks = Vec::new();
    let mut notes = Vec::new();
    // The callers' turns count from here.
    let epoch = Instant::now();

    if !plan.before.is_empty() {
        timeline.push(Event {
            at: t0.elapsed(),
            text: format!("placing {} calls", plan.before.len()),
        });
        let up = place(
            &plan.before,
            pick,
            t0,
            epoch,
            &cue,
            &mut tasks,
            UpWhen::Audio,
        )
        .await;
        timeline.push(Event {
            at: t0.elapsed(),
            text: format!(
                "{up} of {} calls up with audio both ways",
                plan.before.len()
            ),
        });
        if up == 0 {
            bail!("no call came up before the failure; see holdfast's log (--keep-dir)");
        }
        match args.turns() {
            // Where the turns put the failure: some callers talking, some in a pause.
            Some(turns) => {
                let at = epoch + turns.failure_at();
                let late = Instant::now().saturating_duration_since(at);
                if late >= Duration::from_millis(100) {
                    notes.push(format!(
                        "The calls took {} ms longer to come up than the turns allow: the \
                         failure came late, so the callers were not where the drill planned \
                         them (the `at failure` column says where they were).",
                        late.as_millis()
                    ));
                }
                tokio::time::sleep_until(at.into()).await;
            }
            // Let every call talk for a moment so "before" is established.
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }

    for name in &plan.kill {
        let child = peers
            .get_mut(name)
            .ok_or_else(|| anyhow!("no peer {name}"))?;
        let pid = child.pid();
        child.kill()?;
        timeline.push(Event {
            at: t0.elapsed(),
            text: format!("failure injected: SIGKILL {name} (pid {pid})"),
        });
    }
    let failure_at = t0.elapsed();

    if !plan.after.is_empty() {
        timeline.push(Event {
            at: t0.elapsed(),
            text: format!("placing {} outbound calls", plan.after.len()),
        });
        let up = place(
            &plan.after,
            pick,
            t0,
            epoch,
            &cue,
            &mut tasks,
            UpWhen::Audio,
        )
        .await;
        timeline.push(Event {
            at: t0.elapsed(),
            text: format!(
                "{up} of {} outbound calls connected with audio both ways",
                plan.after.len()
            ),
        });
    }

    let end = t0 + failure_at + args.hold;
    let silence = args.caller_silence();
    if !silence.is_zero() {
        tokio::time::sleep_until((end - silence).into()).await;
        timeline.push(Event {
            at: t0.elapsed(),
            text: format!(
                "the callers fall silent, {} ms before they hang up",
                silence.as_millis()
            ),
        });
        let _ = cue_tx.send(Cue::Silent);
    }
    tokio::time::sleep_until(end.into()).await;
    let end_at = t0.elapsed();
    timeline.push(Event {
        at: end_at,
        text: "hold over: the drill hangs up every call".into(),
    });
    let _ = cue_tx.send(Cue::HangUp);
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.context("a call task failed")?);
    }
    results.sort_by_key(|r| r.index);
    timeline.push(Event {
        at: t0.elapsed(),
        text: format!(
            "end: {} BYEs answered",
            results.iter().filter(|r| r.bye_status == Some(200)).count()
        ),
    });
    let ctx = Context {
        failure_at,
        end_at,
        peers: topology::peer_names(),
        primary_carrier: "carrier-a".into(),
        failed: plan.kill.clone(),
        quiet: args.quiet_agents,
    };
    Ok(Driven {
        results,
        ctx,
        timeline,
        notes,
    })
}

/// For unit tests and `admin`: where a report goes when no `--report` is given.
pub fn report_path(args: &DrillArgs, stamp: &str) -> PathBuf {
    args.report
        .clone()
        .unwrap_or_else(|| default_report_path(stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_split_calls_and_pick_victims() {
        let p = plan(FailLayer::AiProvider, 3, false, None);
        assert_eq!(p.before.len(), 3);
        assert!(p.after.is_empty());
        assert_eq!(p.kill, vec!["agent-a"]);
        assert_eq!(p.before[2].callee, "+15551000003");

        let p = plan(FailLayer::Carrier, 2, true, None);
        assert!(p.before.is_empty());
        assert_eq!(p.after[0].callee, "+15553000001");
        assert_eq!(p.kill, vec!["carrier-a", "carrier-b"]);

        let p = plan(FailLayer::All, 10, false, None);
        let kinds = |v: &[CallSpec], k| v.iter().filter(|s| s.kind == k).count();
        assert_eq!(kinds(&p.before, CallKind::InboundSip), 4);
        assert_eq!(kinds(&p.before, CallKind::InboundWs), 3);
        assert_eq!(p.after.len(), 3);
        assert_eq!(p.kill, vec!["agent-a", "bot-a", "carrier-a"]);
        let mut idx: Vec<u16> = p.before.iter().chain(&p.after).map(|s| s.index).collect();
        idx.dedup();
        assert_eq!(idx, (1..=10).collect::<Vec<_>>(), "indices unique");

        let p = plan(FailLayer::All, 1, false, None);
        assert_eq!(p.before.len(), 1);
        assert_eq!(p.kill, vec!["agent-a"], "only the layers that carry calls");
        assert!(p.before.iter().all(|s| s.speech == Speech::Continuous));
    }

    #[test]
    fn in_turns_each_kind_meets_the_failure_talking_and_pausing() {
        let t = Turns {
            talk: turns::DEFAULT_TALK,
            pause: turns::DEFAULT_PAUSE,
        };
        let p = plan(FailLayer::All, 11, false, Some(t));
        let f = t.failure_at();
        let at_failure = |kind| {
            p.before
                .iter()
                .filter(|s| s.kind == kind)
                .map(|s| s.speech.talking(f, Duration::ZERO))
                .collect::<Vec<_>>()
        };
        // 5 SIP calls: talking, mid-pause, end of a pause, talking, mid-pause.
        assert_eq!(
            at_failure(CallKind::InboundSip),
            [true, false, false, true, false]
        );
        assert_eq!(at_failure(CallKind::InboundWs), [true, false, false]);
        let offsets: Vec<Duration> = p
            .before
            .iter()
            .filter(|s| s.kind == CallKind::InboundSip)
            .filter_map(|s| match s.speech {
                Speech::Turns { offset, .. } => Some(offset),
                Speech::Continuous => None,
            })
            .collect();
        assert_eq!(offsets[1], t.offset(Slot::Pause));
        assert_eq!(offsets[2], t.offset(Slot::PauseEnd));
        // Outbound calls, placed after the failure, talk as soon as they are answered.
        assert_eq!(p.after.len(), 3);
        for s in &p.after {
            assert_eq!(
                s.speech,
                Speech::Turns {
                    turns: t,
                    offset: Duration::ZERO,
                    from_answer: true
                }
            );
        }
    }

    fn args(extra: &[&str]) -> Result<DrillArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            drill: DrillArgs,
        }
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("drill").chain(extra.iter().copied())).map(|c| c.drill)
    }

    #[test]
    fn quiet_flags_have_defaults_and_holds_too_short_to_judge_are_refused() {
        let a = args(&["--quiet-agents"]).unwrap();
        assert_eq!(
            a.turns().map(|t| (t.talk, t.pause)),
            Some((turns::DEFAULT_TALK, turns::DEFAULT_PAUSE))
        );
        assert_eq!(a.caller_silence(), Duration::from_secs(3));
        assert_eq!(a.hold, Duration::from_secs(8));
        a.check()
            .expect("the default hold judges the default turns");
        let a = args(&[]).unwrap();
        assert_eq!((a.turns(), a.caller_silence()), (None, Duration::ZERO));
        a.check().unwrap();

        let e = args(&["--quiet-agents", "--hold", "7s"])
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("--hold 7s is too short"), "{e}");
        assert!(e.to_string().contains("use --hold 8s or more"), "{e}");
        let e = args(&["--quiet-agents", "--pause", "10s", "--hold", "8s"])
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("use --hold 10s or more"), "{e}");
        args(&["--quiet-agents", "--caller-silence", "0s", "--hold", "5s"])
            .unwrap()
            .check()
            .unwrap();
        let e = args(&["--quiet-agents", "--talk", "500ms"])
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("--talk 500ms is too short"), "{e}");
        let e = args(&["--caller-silence", "3s", "--hold", "4s"])
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("use --hold 5s or more"), "{e}");

        // Turn lengths only with --quiet-agents; neither with --admin.
        assert!(args(&["--pause", "6s"]).is_err());
        assert!(args(&["--talk", "2s"]).is_err());
        assert!(args(&["--quiet-agents", "--admin", "http://127.0.0.1:1"]).is_err());
        assert!(args(&["--caller-silence", "1s", "--admin", "http://127.0.0.1:1"]).is_err());
    }
}
