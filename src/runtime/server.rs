//! The tokio shell around the B2BUA core: owns the UDP and TCP sockets, the clock, the
//! signals and the DNS tasks, and feeds everything to [`Core`] as inputs with `now`.
//!
//! One task owns the core; socket readers hand it datagrams over a channel, so the core
//! needs no lock. Media commands go to the [`MediaEngine`] before the SIP that advertises
//! their ports is sent: each relay is bound right there and the result (`Bound` or
//! `OpenFailed`) goes back into the core before its transmits are drained; the workers'
//! media events come back as core inputs. At start it raises RLIMIT_NOFILE to the hard
//! limit and logs the call capacity; when load drops it gives freed heap back to the OS
//! (`runtime::memory`). It never makes a call decision itself.
use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::admin::api::{AdminOp, Reply, TargetAction, PROMETHEUS_TEXT};
use crate::admin::metrics::Exposition;
use crate::ai::control::AiEvent;
use crate::b2bua::record::{CallRecord, MediaRecord};
use crate::b2bua::{Core, Output, Received, Transmit};
use crate::config::{self, Config};
use crate::health::Destination;
use crate::media::control::MediaEvent;
use crate::routing::TargetId;
use crate::runtime::admin::{AdminRequest, RecordSink, Records};
use crate::runtime::ai::AiEngine;
use crate::runtime::dns::{Resolver, SipTarget};
use crate::runtime::media::{EngineOptions, MediaEngine};
use crate::runtime::memory::{self, Trim};
use crate::runtime::wallclock::rfc3339;
use crate::runtime::webhook::Webhook;
use crate::sip::framing;
use crate::sip::Transport;

/// How the process was asked to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config_path: PathBuf,
    /// After SIGTERM, how long to wait for calls to end before exiting anyway.
    pub drain_timeout: Duration,
}

enum Input {
    Received(Received),
    Resolved(TargetId, Vec<Destination>),
    TransportError(Transport, SocketAddr),
}

/// TCP connections by peer address: a writer channel each.
type Connections = Arc<DashMap<SocketAddr, mpsc::Sender<Bytes>>>;

struct Shell {
    udp: HashMap<SocketAddr, Arc<UdpSocket>>,
    tcp_local: Vec<SocketAddr>,
    conns: Connections,
    tx: mpsc::Sender<Input>,
    max_message_size: usize,
    dns_tasks: Vec<JoinHandle<()>>,
    media: MediaEngine,
    /// WebSocket AI legs and handshake probes.
    ai: AiEngine,
    /// The user's webhook (`ai.webhook`), with the URL it was started for.
    webhook: Option<(String, Webhook)>,
    /// The call-record writer (`records.path`).
    records: Records,
    /// `Instant` ↔ wall clock, for call records' timestamps.
    clock: (Instant, std::time::SystemTime),
    /// The configuration in force and where it came from.
    config: Arc<Config>,
    config_path: PathBuf,
    /// Reloads by result, for `/metrics`.
    reloads: (u64, u64),
    drain_timeout: Duration,
    drain_deadline: Option<tokio::time::Instant>,
    /// When to give freed heap back to the OS (load dropped).
    trim: Trim,
}

/// Runs holdfast until SIGINT, or until SIGTERM's drain finishes.
pub async fn run(opts: RunOptions) -> Result<()> {
    let config = Arc::new(config::load(&opts.config_path).map_err(|e| anyhow::anyhow!("{e}"))?);
    // Before anything is bound: every relay port is a descriptor.
    crate::runtime::limits::log_raise(&crate::runtime::limits::raise_nofile());
    let (tx, mut rx) = mpsc::channel::<Input>(8192);
    let (media_tx, mut media_rx) = mpsc::unbounded_channel::<MediaEvent>();
    let (ai_tx, mut ai_rx) = mpsc::unbounded_channel::<AiEvent>();
    let media_options = EngineOptions {
        threads: config.media.threads,
        io: config.media.io,
        raw_bind: config.media.addrs.v4_bind(),
        ports: config.media.ports.clone(),
    };
    let media = MediaEngine::start_with(&media_options, media_tx)
        .context("starting the media worker threads")?;
    info!(
        bind = %config.media.addrs.iter().map(|a| a.bind.to_string()).collect::<Vec<_>>().join(","),
        advertise = %config.media.addrs.iter().map(|a| a.advertise.to_string()).collect::<Vec<_>>().join(","),
        ports = %format!("{}-{}", config.media.ports.start(), config.media.ports.end()),
        threads = config.media.threads, io = media.io().as_str(), "media relay ready"
    );
    let mut shell = Shell {
        udp: HashMap::new(),
        tcp_local: Vec::new(),
        conns: Arc::new(DashMap::new()),
        tx: tx.clone(),
        max_message_size: config.sip.max_message_size,
        dns_tasks: Vec::new(),
        media,
        ai: AiEngine::new(ai_tx),
        webhook: None,
        records: Records::start(record_sink(&config)),
        clock: (Instant::now(), std::time::SystemTime::now()),
        config: config.clone(),
        config_path: opts.config_path.clone(),
        reloads: (0, 0),
        drain_timeout: opts.drain_timeout,
        drain_deadline: None,
        trim: Trim::default(),
    };
    shell.set_webhook(&config);
    for l in &config.sip.listen {
        match l.transport {
            Transport::Udp => {
                let sock = Arc::new(
                    UdpSocket::bind(l.addr)
                        .await
                        .with_context(|| format!("binding udp:{}", l.addr))?,
                );
                // ICMP port unreachable for what holdfast sends (a peer whose SIP port is
                // closed) fails its transactions at once instead of at Timer B/F.
                {
                    use std::os::fd::AsRawFd as _;
                    super::media::sys::enable_recverr(sock.as_raw_fd(), l.addr.is_ipv6())
                        .with_context(|| format!("IP_RECVERR on udp:{}", l.addr))?;
                }
                let rcvbuf = grow_receive_buffer(&sock, SIP_RECEIVE_BUFFER);
                if rcvbuf < SIP_RECEIVE_BUFFER {
                    info!(addr = %l.addr, rcvbuf,
                        "SIP UDP receive buffer smaller than asked ({SIP_RECEIVE_BUFFER} bytes): a burst \
                         (a flood, a carrier's peak) the main loop is a moment late for is dropped by the \
                         kernel; raise net.core.rmem_max or run with CAP_NET_ADMIN");
                }
                shell.udp.insert(l.addr, sock.clone());
                tokio::spawn(udp_reader(sock, l.addr, tx.clone(), shell.max_message_size));
            }
            Transport::Tcp => {
                let lst = TcpListener::bind(l.addr)
                    .await
                    .with_context(|| format!("binding tcp:{}", l.addr))?;
                shell.tcp_local.push(l.addr);
                tokio::spawn(tcp_acceptor(
                    lst,
                    l.addr,
                    tx.clone(),
                    shell.conns.clone(),
                    shell.max_message_size,
                ));
            }
        }
        info!(transport = %l.transport.as_str(), addr = %l.addr, "listening");
    }
    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminRequest>(64);
    if let Some(addr) = config.admin.listen {
        let listener = crate::runtime::admin::bind(addr).await?;
        crate::runtime::admin::spawn(listener, config.admin.token.clone(), admin_tx.clone());
        info!(%addr, auth = config.admin.token_env.as_deref().unwrap_or("none (loopback only)"), "admin API listening");
    }
    crate::runtime::limits::log_capacity(&config);
    let seed: u64 = rand::random();
    let mut core = Core::new(config.clone(), seed, Instant::now());
    shell.start_dns(&config, &core);

    let mut memory_check = tokio::time::interval(crate::runtime::memory::CHECK_INTERVAL);
    memory_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    info!(config = %opts.config_path.display(), node = core.node(), "holdfast is up");
    loop {
        let next_deadline = shell.flush(&mut core).await;
        shell.trim.note(memory::in_progress(&core.stats()));
        // Drained: no call left, and the last ones' records have their media statistics.
        if shell.drain_deadline.is_some()
            && core.stats().calls_active == 0
            && !core.records_waiting()
        {
            info!("drained: no calls left; exiting");
            shell.exit(&mut core).await;
            return Ok(());
        }
        let wake = next_deadline
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let wake = match shell.drain_deadline {
            Some(d) if d < wake => d,
            _ => wake,
        };
        tokio::select! {
            Some(ev) = ai_rx.recv() => {
                let now = Instant::now();
                core.handle_ai_event(ev, now);
                for _ in 0..256 {
                    match ai_rx.try_recv() {
                        Ok(ev) => core.handle_ai_event(ev, now),
                        Err(_) => break,
                    }
                }
            }
            Some(ev) = media_rx.recv() => {
                let now = Instant::now();
                core.handle_media_event(ev, now);
                for _ in 0..256 {
                    match media_rx.try_recv() {
                        Ok(ev) => core.handle_media_event(ev, now),
                        Err(_) => break,
                    }
                }
            }
            Some(input) = rx.recv() => {
                shell.handle(&mut core, input);
                // Batch what is already queued before flushing.
                for _ in 0..64 {
                    match rx.try_recv() {
                        Ok(input) => shell.handle(&mut core, input),
                        Err(_) => break,
                    }
                }
            }
            Some((op, reply)) = admin_rx.recv() => {
                shell.admin(&mut core, op, reply);
            }
            _ = tokio::time::sleep_until(wake) => {
                if shell.drain_deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                    warn!(calls = core.stats().calls_active, "drain timeout; exiting with calls up");
                    shell.exit(&mut core).await;
                    return Ok(());
                }
                core.handle_timeout(Instant::now());
            }
            _ = memory_check.tick() => shell.check_memory(&core),
            _ = sighup.recv() => {
                let _ = shell.reload(&mut core, "SIGHUP");
            }
            _ = sigterm.recv() => {
                if shell.drain_deadline.is_some() {
                    info!("second SIGTERM: exiting now");
                    shell.exit(&mut core).await;
                    return Ok(());
                }
                shell.drain(&mut core, "SIGTERM");
            }
            _ = tokio::signal::ctrl_c() => {
                info!("SIGINT: exiting");
                shell.exit(&mut core).await;
                return Ok(());
            }
        }
    }
}

impl Shell {
    fn handle(&mut self, core: &mut Core, input: Input) {
        let now = Instant::now();
        match input {
            Input::Received(r) => core.handle_received(r, now),
            Input::Resolved(id, dests) => core.handle_resolved(&id, dests, now),
            Input::TransportError(t, addr) => core.handle_transport_error(t, addr, now),
        }
    }

    /// Does what the core asks, in its order, until it has nothing left; returns its next
    /// deadline. An `Open` is bound by the media shell here and its answer goes straight
    /// back into the core, which may queue another `Open` (other ports) before any SDP is
    /// released.
    async fn flush(&mut self, core: &mut Core) -> Option<Instant> {
        let now = Instant::now();
        loop {
            match core.poll_output() {
                Output::Media(cmd) => {
                    if let Some(ev) = self.media.handle(cmd) {
                        core.handle_media_event(ev, now);
                    }
                }
                Output::Ai(cmd) => self.ai.handle(cmd),
                Output::Webhook(mut event) => {
                    if let Some((_, hook)) = &self.webhook {
                        if let Some(obj) = event.as_object_mut() {
                            obj.insert("at".into(), serde_json::Value::from(unix_time_rfc3339()));
                        }
                        hook.send(event);
                    }
                }
                Output::Transmit(t) => self.send(t).await,
                Output::Record(r) => self.write_record(&r),
                Output::Timeout(at) => return at,
            }
        }
    }

    fn write_record(&self, r: &CallRecord) {
        let wall = |i: Instant| {
            let (mono, sys) = self.clock;
            let t = if i >= mono {
                sys + (i - mono)
            } else {
                sys - (mono - i)
            };
            rfc3339(t)
        };
        let mut r = r.clone();
        r.start = Some(wall(r.started));
        r.answered_at = r.answered.map(wall);
        r.end = Some(wall(r.ended));
        match serde_json::to_string(&r) {
            Ok(line) => self.records.write(line),
            Err(e) => warn!(call = %r.id, "call record not serialized: {e}"),
        }
    }

    /// Before the process exits: the records still waiting for media statistics are
    /// written as they are, and the writer is flushed.
    async fn exit(&mut self, core: &mut Core) {
        self.flush(core).await;
        for r in core.take_pending_records() {
            self.write_record(&r);
        }
        self.records.flush().await;
    }

    /// Parses and validates the whole file, then swaps it in; a bad file changes nothing.
    fn reload(&mut self, core: &mut Core, by: &str) -> Result<(), String> {
        match config::load(&self.config_path) {
            Ok(new) => {
                let new = Arc::new(new);
                core.handle_reload(new.clone(), Instant::now());
                self.start_dns(&new, core);
                self.set_webhook(&new);
                if new.sip.listen != self.config.sip.listen {
                    warn!("sip.listen changed: listeners are only rebound on restart");
                }
                if new.admin != self.config.admin {
                    warn!("admin changed: the admin API is only rebound on restart");
                }
                self.records.reopen(record_sink(&new));
                self.config = new;
                self.reloads.0 += 1;
                info!(by, config = %self.config_path.display(), "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                self.reloads.1 += 1;
                error!(by, "reload refused, keeping the running configuration: {e}");
                Err(e.to_string())
            }
        }
    }

    /// Once the calls and transactions in progress fell to half of their peak (or to none),
    /// hands the heap that ended calls freed back to the OS, on a blocking thread (see `runtime::memory`).
    fn check_memory(&mut self, core: &Core) {
        if !self.trim.observe(memory::in_progress(&core.stats())) {
            return;
        }
        tokio::task::spawn_blocking(|| {
            let before = memory::resident_bytes();
            let started = Instant::now();
            memory::trim_heap();
            let took = started.elapsed();
            let mib = |b: Option<u64>| b.map_or(f64::NAN, |b| b as f64 / 1048576.0);
            debug!(
                rss_before_mib = format!("{:.1}", mib(before)),
                rss_after_mib = format!("{:.1}", mib(memory::resident_bytes())),
                took_us = took.as_micros() as u64,
                "load dropped: freed heap returned to the OS"
            );
        });
    }

    /// 503 to new calls; exit once the calls are gone or at the deadline.
    fn drain(&mut self, core: &mut Core, by: &str) {
        if self.drain_deadline.is_none() {
            info!(calls = core.stats().calls_active, timeout = ?self.drain_timeout, "{by}: draining");
            core.set_draining(true);
            self.drain_deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
        }
    }

    /// Answers an admin API operation (see `admin::api`).
    fn admin(&mut self, core: &mut Core, op: AdminOp, reply: tokio::sync::oneshot::Sender<Reply>) {
        let now = Instant::now();
        let answer = match op {
            AdminOp::Live => Reply::text(200, "ok"),
            AdminOp::Ready => {
                if core.is_ready(Instant::now()) {
                    Reply::text(200, "ready")
                } else if core.is_draining() {
                    Reply::text(503, "draining")
                } else {
                    Reply::text(503, "not ready: the first health round is not done")
                }
            }
            AdminOp::Metrics => Reply {
                status: 200,
                content_type: PROMETHEUS_TEXT,
                body: self.metrics(core),
            },
            AdminOp::Calls | AdminOp::Call(_) => {
                let one = match &op {
                    AdminOp::Call(id) => Some(id.clone()),
                    _ => None,
                };
                let views = match &one {
                    Some(id) => core.call_view(id, now).into_iter().collect(),
                    None => core.call_views(now),
                };
                if one.is_some() && views.is_empty() {
                    Reply::error(404, format!("no call {}", one.unwrap_or_default()))
                } else {
                    // Live media counters come from the workers, off the main loop.
                    let query = self.media.relay_stats_query(Duration::from_millis(500));
                    tokio::spawn(async move {
                        let stats = tokio::task::spawn_blocking(query).await.unwrap_or_default();
                        let mut views = views;
                        for v in &mut views {
                            let mut m = MediaRecord::default();
                            let mut any = false;
                            for s in stats.iter().filter(|s| s.id.call == v.relay_call) {
                                any = true;
                                let (carrier, ai) = if v.direction == "inbound" {
                                    (&s.a_to_b, &s.b_to_a)
                                } else {
                                    (&s.b_to_a, &s.a_to_b)
                                };
                                m.carrier.add(carrier);
                                m.ai.add(ai);
                            }
                            v.media = any.then_some(m);
                        }
                        let r = match one {
                            Some(_) => Reply::json(200, &views[0]),
                            None => Reply::json(200, &Calls { calls: &views }),
                        };
                        let _ = reply.send(r);
                    });
                    return;
                }
            }
            AdminOp::Targets => Reply::json(
                200,
                &Targets {
                    targets: &core.target_views(now),
                },
            ),
            AdminOp::Target(id) => match core.target_view(&id, now) {
                Some(t) => Reply::json(200, &t),
                None => Reply::error(404, format!("unknown target {id}")),
            },
            AdminOp::TargetAction(id, action) => {
                let view = match action {
                    TargetAction::Cordon => core.set_cordoned(&id, true, now),
                    TargetAction::Uncordon => core.set_cordoned(&id, false, now),
                    TargetAction::Fail => core.set_failed(&id, true, now),
                    TargetAction::Restore => core.set_failed(&id, false, now),
                };
                match view {
                    Some(t) => Reply::json(200, &t),
                    None => Reply::error(404, format!("unknown target {id}")),
                }
            }
            AdminOp::Reload => match self.reload(core, "admin API") {
                Ok(()) => Reply::json(200, &serde_json::json!({ "reloaded": true })),
                Err(e) => Reply::error(422, e),
            },
            AdminOp::Drain => {
                self.drain(core, "admin API");
                Reply::json(
                    202,
                    &serde_json::json!({
                        "draining": true,
                        "calls": core.stats().calls_active,
                        "timeout_s": self.drain_timeout.as_secs(),
                    }),
                )
            }
        };
        let _ = reply.send(answer);
    }

    /// The Prometheus exposition: the core's families, then the media workers' and the
    /// shell's own.
    fn metrics(&self, core: &Core) -> String {
        let mut out = Exposition::new();
        out.gauge(
            "holdfast_build_info",
            "holdfast's version.",
            [(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        );
        core.render_metrics(&mut out, Instant::now());
        let m = self.media.counters();
        out.counter1(
            "holdfast_rtp_packets_total",
            "RTP packets relayed (forwarded to the other leg).",
            m.packets_forwarded,
        );
        out.counter1(
            "holdfast_rtp_bytes_total",
            "Octets of RTP relayed.",
            m.bytes_forwarded,
        );
        out.counter1(
            "holdfast_rtp_received_total",
            "Datagrams read from relay sockets.",
            m.packets_received,
        );
        out.counter1(
            "holdfast_rtcp_packets_total",
            "RTCP packets relayed.",
            m.rtcp_forwarded,
        );
        let mut drops: Vec<(Vec<(&str, &str)>, u64)> = m
            .drops_by_reason()
            .iter()
            .map(|(r, v)| (vec![("reason", *r)], *v))
            .collect();
        drops.push((vec![("reason", "send_would_block")], m.send_would_block));
        drops.push((vec![("reason", "send_failed")], m.send_failed));
        out.counter(
            "holdfast_rtp_drops_total",
            "Media datagrams dropped, by reason.",
            drops,
        );
        out.gauge1(
            "holdfast_media_relays_open",
            "Relays (anchored streams) open.",
            m.relays_open as f64,
        );
        if let Some(open) = crate::runtime::limits::open_descriptors() {
            out.gauge1("process_open_fds", "Open file descriptors.", open as f64);
        }
        if let Some(rss) = memory::resident_bytes() {
            out.gauge1(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss as f64,
            );
        }
        if let Ok(l) = crate::runtime::limits::nofile() {
            out.gauge1(
                "process_max_fds",
                "Maximum number of open file descriptors (the soft RLIMIT_NOFILE).",
                l.soft as f64,
            );
        }
        out.counter(
            "holdfast_config_reloads_total",
            "Configuration reloads, by result.",
            [
                (vec![("result", "ok")], self.reloads.0),
                (vec![("result", "refused")], self.reloads.1),
            ],
        );
        if let Some((_, hook)) = &self.webhook {
            let c = hook.counters();
            out.counter(
                "holdfast_webhook_events_total",
                "Webhook events, by result.",
                [
                    (vec![("result", "delivered")], c.delivered),
                    (vec![("result", "failed")], c.failed),
                    (vec![("result", "dropped")], c.dropped),
                ],
            );
        }
        out.finish()
    }

    /// Starts (or keeps, or replaces after a reload) the poster for `ai.webhook`.
    fn set_webhook(&mut self, config: &Config) {
        let want = config.ai.webhook.as_ref();
        if self.webhook.as_ref().map(|(u, _)| u.as_str()) == want.map(|w| w.url.as_str()) {
            return;
        }
        self.webhook = want.and_then(|w| match Webhook::start(&w.url, w.timeout) {
            Ok(h) => {
                info!(url = %w.url, "webhook ready");
                Some((w.url.clone(), h))
            }
            Err(e) => {
                error!(url = %w.url, "webhook disabled: {e}");
                None
            }
        });
    }

    async fn send(&mut self, t: Transmit) {
        match t.transport {
            Transport::Udp => {
                let sock = self.udp.get(&t.local).or_else(|| {
                    self.udp.values().find(|s| {
                        s.local_addr()
                            .is_ok_and(|a| a.is_ipv4() == t.remote.is_ipv4())
                    })
                });
                let Some(sock) = sock else {
                    warn!(local = %t.local, "no UDP socket to send from");
                    return;
                };
                let mut sent = sock.send_to(&t.data, t.remote).await;
                if sent.is_err() {
                    // With IP_RECVERR the socket's pending error may be an ICMP error for
                    // another peer (it fails the next syscall, whoever it is for): the error
                    // queue says which peers are gone, and this datagram goes again.
                    use std::os::fd::AsRawFd as _;
                    let mut gone = Vec::new();
                    super::media::sys::drain_error_queue(sock.as_raw_fd(), |d| gone.push(d));
                    for d in &gone {
                        let _ = self.tx.try_send(Input::TransportError(Transport::Udp, *d));
                    }
                    if !gone.is_empty() && !gone.contains(&t.remote) {
                        sent = sock.send_to(&t.data, t.remote).await;
                    }
                }
                if let Err(e) = sent {
                    debug!(remote = %t.remote, "udp send failed: {e}");
                    let _ = self
                        .tx
                        .try_send(Input::TransportError(Transport::Udp, t.remote));
                }
            }
            Transport::Tcp => {
                if let Some(w) = self.conns.get(&t.remote) {
                    match w.try_send(t.data.clone()) {
                        Ok(()) => return,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // The peer reads slower than we write: drop this message (its
                            // transaction times out and the call logic reacts as for any
                            // unanswered request) rather than open a second connection
                            // behind the first one's back.
                            warn!(remote = %t.remote, "TCP send queue full; message dropped");
                            return;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
                // No connection (or it died): open one (RFC 3261 §18.2.2 for responses,
                // §18.1.1 for requests) and send once connected.
                let local = self
                    .tcp_local
                    .iter()
                    .find(|a| a.is_ipv4() == t.remote.is_ipv4())
                    .copied()
                    .unwrap_or(t.local);
                tokio::spawn(tcp_connect(
                    t.remote,
                    local,
                    t.data,
                    self.tx.clone(),
                    self.conns.clone(),
                    self.max_message_size,
                ));
            }
        }
    }

    /// (Re)starts one RFC 3263 resolution loop per target whose host needs DNS.
    fn start_dns(&mut self, config: &Config, core: &Core) {
        for t in self.dns_tasks.drain(..) {
            t.abort();
        }
        let targets = core.targets_to_resolve();
        if targets.is_empty() {
            return;
        }
        let resolver = match Resolver::new(&config.dns.nameservers) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                error!("DNS resolver unavailable: {e}");
                return;
            }
        };
        let min_ttl = config.dns.min_ttl;
        for t in targets {
            let tx = self.tx.clone();
            let resolver = resolver.clone();
            let id = t.id.clone();
            let target = SipTarget {
                host: t.uri.host.clone(),
                port: t.uri.port,
                transport: t.uri.transport,
                secure: false,
            };
            self.dns_tasks.push(tokio::spawn(async move {
                loop {
                    let wait = match resolver.resolve(&target).await {
                        Ok(r) => {
                            let _ = tx.send(Input::Resolved(id.clone(), r.destinations)).await;
                            r.ttl.max(min_ttl)
                        }
                        Err(e) => {
                            warn!(target_id = %id, host = %target.host, "DNS resolution failed: {e}");
                            min_ttl
                        }
                    };
                    tokio::time::sleep(wait).await;
                }
            }));
        }
    }
}

/// What a SIP UDP listener's kernel receive buffer is asked to hold: about 150 ms of a
/// 24 000 datagram/s flood (each small datagram costs ~2 KiB of buffer), so a moment's
/// delay of the main loop loses nothing (the default, ~200 KiB, holds a few milliseconds).
const SIP_RECEIVE_BUFFER: usize = 8 << 20;

/// Asks for `bytes` of receive buffer (SO_RCVBUFFORCE when privileged, else SO_RCVBUF, which
/// net.core.rmem_max caps); returns what the kernel granted.
fn grow_receive_buffer(sock: &UdpSocket, bytes: usize) -> usize {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let set = |opt| {
        // SAFETY: a live socket and a c_int option value of the stated length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&want as *const libc::c_int).cast(),
                len,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) {
        set(libc::SO_RCVBUF);
    }
    let mut got: libc::c_int = 0;
    let mut got_len = len;
    // SAFETY: reads a c_int option into a live local of the stated length.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut got_len,
        ) == 0
    };
    // Linux reports twice the value set (the other half is its bookkeeping).
    if ok {
        usize::try_from(got).unwrap_or(0) / 2
    } else {
        0
    }
}

async fn udp_reader(sock: Arc<UdpSocket>, local: SocketAddr, tx: mpsc::Sender<Input>, max: usize) {
    let mut buf = vec![0u8; max.max(1500) + 1];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, remote)) => {
                if n > max {
                    debug!(%remote, n, "datagram over max_message_size dropped");
                    continue;
                }
                // RFC 5626 keep-alives (CRLF) are not messages.
                if buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    continue;
                }
                let r = Received {
                    transport: Transport::Udp,
                    local,
                    remote,
                    data: Bytes::copy_from_slice(&buf[..n]),
                };
                if tx.send(Input::Received(r)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // An ICMP error for something we sent (IP_RECVERR): the error queue says
                // where to; every transaction toward that address fails now. Never fatal
                // for a listener.
                use std::os::fd::AsRawFd as _;
                let mut gone = Vec::new();
                super::media::sys::drain_error_queue(sock.as_raw_fd(), |dest| gone.push(dest));
                debug!(%local, ?gone, "udp recv error: {e}");
                for dest in gone {
                    if tx
                        .send(Input::TransportError(Transport::Udp, dest))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

async fn tcp_acceptor(
    lst: TcpListener,
    local: SocketAddr,
    tx: mpsc::Sender<Input>,
    conns: Connections,
    max: usize,
) {
    loop {
        match lst.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                spawn_connection(stream, local, remote, tx.clone(), conns.clone(), max, None);
            }
            Err(e) => {
                warn!(%local, "tcp accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_connect(
    remote: SocketAddr,
    local: SocketAddr,
    first: Bytes,
    tx: mpsc::Sender<Input>,
    conns: Connections,
    max: usize,
) {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(remote)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            spawn_connection(stream, local, remote, tx, conns, max, Some(first));
        }
        Ok(Err(e)) => {
            debug!(%remote, "tcp connect failed: {e}");
            let _ = tx.send(Input::TransportError(Transport::Tcp, remote)).await;
        }
        Err(_) => {
            debug!(%remote, "tcp connect timed out");
            let _ = tx.send(Input::TransportError(Transport::Tcp, remote)).await;
        }
    }
}

fn spawn_connection(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    tx: mpsc::Sender<Input>,
    conns: Connections,
    max: usize,
    first: Option<Bytes>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::channel::<Bytes>(256);
    if let Some(f) = first {
        let _ = wtx.try_send(f);
    }
    conns.insert(remote, wtx);
    let conns_w = conns.clone();
    let tx_w = tx.clone();
    tokio::spawn(async move {
        while let Some(data) = wrx.recv().await {
            if let Err(e) = wr.write_all(&data).await {
                debug!(%remote, "tcp write failed: {e}");
                let _ = tx_w
                    .send(Input::TransportError(Transport::Tcp, remote))
                    .await;
                break;
            }
        }
        conns_w.remove(&remote);
    });
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(8192);
        loop {
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            loop {
                match framing::frame(&buf, max) {
                    Ok(Some((len, skip))) => {
                        let _ = buf.split_to(skip);
                        let data = buf.split_to(len).freeze();
                        let r = Received {
                            transport: Transport::Tcp,
                            local,
                            remote,
                            data,
                        };
                        if tx.send(Input::Received(r)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A stream we cannot frame cannot be resynchronised: close it.
                        warn!(%remote, "closing TCP connection: {e}");
                        conns.remove(&remote);
                        return;
                    }
                }
            }
        }
        conns.remove(&remote);
    });
}

/// `GET /calls` (a struct, so fields keep their declared order).
#[derive(serde::Serialize)]
struct Calls<'a> {
    calls: &'a [crate::b2bua::CallView],
}

/// `GET /targets`.
#[derive(serde::Serialize)]
struct Targets<'a> {
    targets: &'a [crate::b2bua::TargetView],
}

/// Where `records.path` sends call records.
fn record_sink(config: &Config) -> Option<RecordSink> {
    match &config.records {
        config::RecordsSettings::Off => None,
        config::RecordsSettings::Stdout => Some(RecordSink::Stdout),
        config::RecordsSettings::File(p) => Some(RecordSink::File(p.clone())),
    }
}

/// Now as an RFC 3339 UTC timestamp with milliseconds (for webhook events).
fn unix_time_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_shape() {
        let t = super::unix_time_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
}
