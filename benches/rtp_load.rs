//! RTP load harness helpers, driven by `benches/rtp_load.sh` (a `harness = false` bench
//! binary; with no subcommand, as under `cargo test --benches` or `cargo bench`, it prints
//! usage and exits 0).
//!
//! - `setup`: a minimal SIP UAC + UAS over UDP (two sockets of its own) that places N calls
//!   through holdfast, keeps them up, answers in-dialog requests, and hangs them up with BYE on
//!   SIGTERM/SIGINT or after `--hold-secs`. It writes the generator's pairs file
//!   ("<our A port> <holdfast A port>") and the sink's ports file ("<our B port>") in exactly
//!   the format of `../shared/peers/tools/ng.py setup`, so the peers' `udpgen`/`udpsink` run
//!   unchanged against holdfast, rtpengine and the minimal forwarder.
//! - `latency`: a paced RTP generator (round-robin over the pairs, one packet per visit, from
//!   each pair's source port, like `udpgen -b 1`) that writes a CLOCK_MONOTONIC send time into
//!   the payload, plus an epoll + recvmmsg receiver on the sink ports in another thread;
//!   prints one-way delay percentiles as `key=value` tokens.
//!
//! It never talks to anything but 127.0.0.0/8 (addresses are refused otherwise), never runs
//! unbounded: every loop has a count or a deadline (`--hold-secs` <= 600, `--secs` <= 120),
//! and never retries forever (SIP retransmissions follow RFC 3261 §17.1.1.2 Timer A/B and
//! §13.3.1.4 for the UAS's 2xx, capped at 64*T1).
//!
//! SETUP LIFECYCLE (per call, UAC side): Pending → Calling (INVITE sent, retransmitted at
//! T1, 2T1, ... until a response) → Proceeding (1xx) → Established (2xx, ACK sent) →
//! ByeSent (BYE retransmitted until 200) → Ended; a final non-2xx or Timer B makes it
//! Failed. UAS side: a new Call-ID answers 200+SDP (retransmitted until ACK) → Acked → Ended
//! on BYE.
use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "\
rtp_load: helpers for benches/rtp_load.sh (loopback only)

usage:
  rtp_load setup --sip 127.0.0.1:PORT --calls N --pairs FILE --ports FILE
                 [--a-base 41000] [--b-base 51000] [--hold-secs 600] [--cps 300]
                 [--uac-port 0] [--uas-port 0] [--ready FILE]
      places N calls through holdfast (SIP over UDP), writes FILE formats of ng.py setup:
      pairs \"<a-base+2i> <holdfast A port>\", ports \"<b-base+2i>\"; prints
      \"setup N calls ...\", then holds the calls until SIGTERM/SIGINT or --hold-secs and
      sends BYE for each. --uac-port/--uas-port: our SIP sockets (0 = any free port; the
      UAS must be the port holdfast routes to, the UAC the source holdfast accepts).
  rtp_load latency --pairs FILE --ports FILE --rate PPS --secs D [--size 172]
      paced generator + receiver; prints
      \"streams= rate= sent= recv= loss%= pps= p50_us= p99_us= p999_us= max_us= errs=\"
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // No subcommand (cargo test --benches) or a libtest/criterion flag (cargo bench passes
    // --bench): print usage and succeed quickly.
    let Some(cmd) = args.first().filter(|a| !a.starts_with('-')) else {
        print!("{USAGE}");
        return;
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "setup" => SetupArgs::parse(rest).and_then(setup::run),
        "latency" => LatencyArgs::parse(rest).and_then(latency::run),
        "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown subcommand {other:?}\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("rtp_load {cmd}: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Argument parsing (by hand: a handful of `--key value` options).

struct Opts<'a> {
    args: &'a [String],
}

impl<'a> Opts<'a> {
    fn new(args: &'a [String], known: &[&str]) -> Result<Self, String> {
        let mut i = 0;
        while i < args.len() {
            if !known.contains(&args[i].as_str()) {
                return Err(format!("unknown option {:?}", args[i]));
            }
            if i + 1 >= args.len() {
                return Err(format!("{} needs a value", args[i]));
            }
            i += 2;
        }
        Ok(Opts { args })
    }
    fn get(&self, key: &str) -> Option<&'a str> {
        self.args
            .chunks(2)
            .find(|c| c[0] == key)
            .and_then(|c| c.get(1))
            .map(String::as_str)
    }
    fn req(&self, key: &str) -> Result<&'a str, String> {
        self.get(key).ok_or_else(|| format!("missing {key}"))
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Result<T, String> {
        match self.get(key) {
            Some(v) => v.parse().map_err(|_| format!("bad {key} {v:?}")),
            None => default.ok_or_else(|| format!("missing {key}")),
        }
    }
}

fn loopback(addr: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = addr
        .parse()
        .map_err(|_| format!("bad address {addr:?} (want 127.x.y.z:port)"))?;
    if !a.ip().is_loopback() || !a.is_ipv4() {
        return Err(format!("{addr}: loopback (127.0.0.0/8) only"));
    }
    Ok(a)
}

struct SetupArgs {
    sip: SocketAddr,
    calls: usize,
    pairs: String,
    ports: String,
    a_base: u16,
    b_base: u16,
    hold: Duration,
    cps: u32,
    uac_port: u16,
    uas_port: u16,
    ready: Option<String>,
}

impl SetupArgs {
    fn parse(args: &[String]) -> Result<Self, String> {
        let o = Opts::new(
            args,
            &[
                "--sip",
                "--calls",
                "--pairs",
                "--ports",
                "--a-base",
                "--b-base",
                "--hold-secs",
                "--cps",
                "--uac-port",
                "--uas-port",
                "--ready",
            ],
        )?;
        let s = SetupArgs {
            sip: loopback(o.req("--sip")?)?,
            calls: o.num("--calls", None)?,
            pairs: o.req("--pairs")?.to_string(),
            ports: o.req("--ports")?.to_string(),
            a_base: o.num("--a-base", Some(41000))?,
            b_base: o.num("--b-base", Some(51000))?,
            hold: Duration::from_secs(o.num("--hold-secs", Some(600u64))?),
            cps: o.num("--cps", Some(300))?,
            uac_port: o.num("--uac-port", Some(0))?,
            uas_port: o.num("--uas-port", Some(0))?,
            ready: o.get("--ready").map(str::to_string),
        };
        if s.calls == 0 || s.calls > 20_000 {
            return Err("--calls must be 1..=20000".into());
        }
        let top = |base: u16| base as usize + 2 * s.calls;
        if top(s.a_base) > 65_535 || top(s.b_base) > 65_535 || s.a_base == 0 || s.b_base == 0 {
            return Err("port range runs past 65535".into());
        }
        if s.hold > Duration::from_secs(600) {
            return Err("--hold-secs must be <= 600".into());
        }
        if s.cps == 0 || s.cps > 5_000 {
            return Err("--cps must be 1..=5000".into());
        }
        Ok(s)
    }
    fn a_port(&self, i: usize) -> u16 {
        (self.a_base as usize + 2 * i) as u16
    }
    fn b_port(&self, i: usize) -> u16 {
        (self.b_base as usize + 2 * i) as u16
    }
}

struct LatencyArgs {
    pairs: String,
    ports: String,
    rate: f64,
    secs: f64,
    size: usize,
}

impl LatencyArgs {
    fn parse(args: &[String]) -> Result<Self, String> {
        let o = Opts::new(args, &["--pairs", "--ports", "--rate", "--secs", "--size"])?;
        let l = LatencyArgs {
            pairs: o.req("--pairs")?.to_string(),
            ports: o.req("--ports")?.to_string(),
            rate: o.num("--rate", None)?,
            secs: o.num("--secs", None)?,
            size: o.num("--size", Some(172))?,
        };
        if !(l.rate > 0.0 && l.rate <= 2_000_000.0) {
            return Err("--rate must be in (0, 2e6]".into());
        }
        if !(l.secs > 0.0 && l.secs <= 120.0) {
            return Err("--secs must be in (0, 120]".into());
        }
        if !(latency::MIN_SIZE..=1500).contains(&l.size) {
            return Err(format!("--size must be {}..=1500", latency::MIN_SIZE));
        }
        Ok(l)
    }
}

// ---------------------------------------------------------------------------------------
// Small shared helpers.

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the same clock in every thread and process on the host).
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Bigger socket buffers, as the peers' tools ask for (FORCE needs CAP_NET_ADMIN; fall back).
fn set_buf(sock: &UdpSocket, opt_force: libc::c_int, opt: libc::c_int, bytes: libc::c_int) {
    let fd = sock.as_raw_fd();
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let p = &bytes as *const libc::c_int as *const libc::c_void;
    // SAFETY: valid fd and a pointer to a c_int of the given length.
    unsafe {
        if libc::setsockopt(fd, libc::SOL_SOCKET, opt_force, p, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, p, len);
        }
    }
}

fn read_pairs(path: &str) -> Result<Vec<(u16, u16)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace().map(str::parse::<u16>);
        match (it.next(), it.next()) {
            (Some(Ok(s)), Some(Ok(d))) if d != 0 => out.push((s, d)),
            _ => return Err(format!("{path}: bad pair line {line:?}")),
        }
    }
    if out.is_empty() {
        return Err(format!("{path}: no pairs"));
    }
    Ok(out)
}

fn read_ports(path: &str) -> Result<Vec<u16>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let ports = text
        .split_whitespace()
        .map(|w| {
            w.parse::<u16>()
                .map_err(|_| format!("{path}: bad port {w:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ports.is_empty() {
        return Err(format!("{path}: no ports"));
    }
    Ok(ports)
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------------------
// A just-enough SIP message reader (RFC 3261 §7): start line, headers, body by
// Content-Length. Malformed input yields None, never a panic.

mod sip {
    pub struct Msg<'a> {
        pub start: &'a str,
        pub headers: Vec<(&'a str, &'a str)>,
        pub body: &'a [u8],
    }

    /// RFC 3261 §7.3.3 compact forms of the headers this harness reads.
    fn compact(name: &str) -> Option<&'static str> {
        Some(match name {
            "via" => "v",
            "from" => "f",
            "to" => "t",
            "call-id" => "i",
            "contact" => "m",
            "content-length" => "l",
            "content-type" => "c",
            _ => return None,
        })
    }

    impl<'a> Msg<'a> {
        pub fn parse(data: &'a [u8]) -> Option<Msg<'a>> {
            let split = data.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head = std::str::from_utf8(&data[..split]).ok()?;
            let rest = &data[split + 4..];
            let mut lines = head.split("\r\n");
            let start = lines.next()?;
            let mut headers = Vec::new();
            for l in lines {
                if l.starts_with([' ', '\t']) {
                    continue; // folded continuation: not used by holdfast; ignore
                }
                if let Some((n, v)) = l.split_once(':') {
                    headers.push((n.trim(), v.trim()));
                }
            }
            let mut m = Msg {
                start,
                headers,
                body: rest,
            };
            if let Some(cl) = m
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
            {
                m.body = &rest[..cl.min(rest.len())];
            }
            Some(m)
        }

        /// Every value of a header (by full name, lowercase; compact form too).
        pub fn all(&self, name: &'a str) -> impl Iterator<Item = &'a str> + '_ {
            let short = compact(name);
            self.headers
                .iter()
                .filter(move |(n, _)| {
                    n.eq_ignore_ascii_case(name) || short.is_some_and(|s| n.eq_ignore_ascii_case(s))
                })
                .map(|(_, v)| *v)
        }

        pub fn header(&self, name: &'a str) -> Option<&'a str> {
            self.all(name).next()
        }

        pub fn is_response(&self) -> bool {
            self.start.starts_with("SIP/2.0 ")
        }

        pub fn status(&self) -> Option<u16> {
            self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
        }

        pub fn method(&self) -> Option<&'a str> {
            if self.is_response() {
                None
            } else {
                self.start.split(' ').next()
            }
        }

        pub fn cseq(&self) -> Option<(u32, &'a str)> {
            let mut it = self.header("cseq")?.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?))
        }

        pub fn call_id(&self) -> Option<&'a str> {
            self.header("call-id")
        }

        pub fn to_tag(&self) -> Option<&'a str> {
            tag(self.header("to")?)
        }
    }

    /// The `tag` parameter of a From/To value (after the URI's closing '>' if bracketed).
    pub fn tag(v: &str) -> Option<&str> {
        let params = match v.rfind('>') {
            Some(i) => &v[i + 1..],
            None => v,
        };
        params.split(';').find_map(|p| {
            let (k, val) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("tag").then_some(val.trim())
        })
    }

    /// The URI inside a name-addr (`<...>`), or the addr-spec up to its parameters.
    pub fn uri(v: &str) -> &str {
        match (v.find('<'), v.find('>')) {
            (Some(a), Some(b)) if a < b => &v[a + 1..b],
            _ => v.split(';').next().unwrap_or(v).trim(),
        }
    }

    /// The user part of a sip: URI.
    pub fn user(uri: &str) -> Option<&str> {
        let rest = uri.split_once(':')?.1;
        Some(rest.split_once('@')?.0)
    }

    /// (connection address, first audio port) of an SDP body (RFC 4566 §5.7, §5.14).
    pub fn sdp_audio(body: &[u8]) -> Option<(String, u16)> {
        let text = std::str::from_utf8(body).ok()?;
        let mut addr = None;
        let mut port = None;
        for l in text.lines().map(str::trim) {
            if let Some(c) = l.strip_prefix("c=IN IP4 ") {
                // Session-level c= or the media's: either one serves this single-stream SDP.
                addr.get_or_insert_with(|| c.split('/').next().unwrap_or(c).trim().to_string());
            } else if let Some(m) = l.strip_prefix("m=audio ") {
                if port.is_none() {
                    port = m.split([' ', '/']).next()?.parse().ok();
                }
            }
        }
        Some((addr?, port?))
    }

    /// A response to `req`: Vias, From, Call-ID, CSeq copied (RFC 3261 §8.2.6.2), our tag
    /// added to To when it has none.
    pub fn response(
        req: &Msg<'_>,
        code: u16,
        reason: &str,
        to_tag: &str,
        contact: Option<&str>,
        sdp: Option<&str>,
    ) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for v in req.all("via") {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        for rr in req.all("record-route") {
            out.push_str(&format!("Record-Route: {rr}\r\n"));
        }
        if let Some(f) = req.header("from") {
            out.push_str(&format!("From: {f}\r\n"));
        }
        if let Some(t) = req.header("to") {
            if tag(t).is_some() || code == 100 {
                out.push_str(&format!("To: {t}\r\n"));
            } else {
                out.push_str(&format!("To: {t};tag={to_tag}\r\n"));
            }
        }
        if let Some(c) = req.call_id() {
            out.push_str(&format!("Call-ID: {c}\r\n"));
        }
        if let Some(c) = req.header("cseq") {
            out.push_str(&format!("CSeq: {c}\r\n"));
        }
        if let Some(c) = contact {
            out.push_str(&format!("Contact: {c}\r\n"));
        }
        match sdp {
            Some(b) => out.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => out.push_str("Content-Length: 0\r\n\r\n"),
        }
        out.into_bytes()
    }

    pub fn sdp(port: u16, session: usize) -> String {
        format!(
            "v=0\r\no=- {session} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
        )
    }
}

// ---------------------------------------------------------------------------------------
// setup: the UAC + UAS.

mod setup {
    use super::sip::{self, Msg};
    use super::*;

    /// RFC 3261 §17.1.1.1 defaults.
    const T1: Duration = Duration::from_millis(500);
    const T2: Duration = Duration::from_secs(4);
    const TIMER_B: Duration = Duration::from_secs(32);
    const BYE_PHASE: Duration = Duration::from_secs(10);

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum State {
        Pending,
        Calling,
        Proceeding,
        Established,
        ByeSent,
        Ended,
        Failed,
    }

    struct UacCall {
        state: State,
        call_id: String,
        from_tag: String,
        invite: Vec<u8>,
        branch: String,
        started: Instant,
        next_retx: Instant,
        interval: Duration,
        /// From the 2xx: To (with tag), remote target, route set, our ACK.
        to: String,
        target: String,
        routes: Vec<String>,
        ack: Vec<u8>,
        bye: Vec<u8>,
        /// holdfast's A-leg media address from the 2xx SDP.
        media: Option<(String, u16)>,
    }

    struct UasCall {
        index: usize,
        to_tag: String,
        ok: Vec<u8>,
        acked: bool,
        ended: bool,
        next_retx: Instant,
        interval: Duration,
        started: Instant,
    }

    struct Harness {
        a: SetupArgs,
        uac: UdpSocket,
        uas: UdpSocket,
        uac_contact: String,
        uas_contact: String,
        calls: Vec<UacCall>,
        by_call_id: HashMap<String, usize>,
        uas_calls: HashMap<String, UasCall>,
        /// For each call index: the B-leg SDP holdfast offered to our UAS.
        b_side: Vec<Option<(String, u16)>>,
        b_used: Vec<bool>,
        b_next_free: usize,
        pid: u32,
        seq: u64,
    }

    pub fn run(a: SetupArgs) -> Result<(), String> {
        install_signal_handlers();
        let bind = |port: u16| {
            let s = UdpSocket::bind((LOOPBACK, port)).map_err(|e| format!("bind {port}: {e}"))?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            set_buf(&s, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, 4 << 20);
            set_buf(&s, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, 4 << 20);
            Ok::<_, String>(s)
        };
        let uac = bind(a.uac_port)?;
        let uas = bind(a.uas_port)?;
        let uac_port = uac.local_addr().map_err(|e| e.to_string())?.port();
        let uas_port = uas.local_addr().map_err(|e| e.to_string())?.port();
        let n = a.calls;
        let now = Instant::now();
        let pid = std::process::id();
        let mut h = Harness {
            uac_contact: format!("<sip:rtpload@127.0.0.1:{uac_port}>"),
            uas_contact: format!("<sip:rtpload-uas@127.0.0.1:{uas_port}>"),
            uac,
            uas,
            calls: Vec::with_capacity(n),
            by_call_id: HashMap::with_capacity(n),
            uas_calls: HashMap::with_capacity(n),
            b_side: vec![None; n],
            b_used: vec![false; n],
            b_next_free: 0,
            pid,
            seq: 0,
            a,
        };
        for i in 0..n {
            let call_id = format!("rtpload-{pid}-{i}@127.0.0.1");
            h.by_call_id.insert(call_id.clone(), i);
            h.calls.push(UacCall {
                state: State::Pending,
                call_id,
                from_tag: format!("a{i}x{pid}"),
                invite: Vec::new(),
                branch: String::new(),
                started: now,
                next_retx: now,
                interval: T1,
                to: String::new(),
                target: String::new(),
                routes: Vec::new(),
                ack: Vec::new(),
                bye: Vec::new(),
                media: None,
            });
        }
        eprintln!(
            "rtp_load setup: uac 127.0.0.1:{uac_port} uas 127.0.0.1:{uas_port} -> holdfast {}",
            h.a.sip
        );

        // Phase 1: place the calls, paced at --cps.
        let t0 = Instant::now();
        let setup_deadline = t0 + Duration::from_secs_f64(n as f64 / h.a.cps as f64) + TIMER_B;
        let mut placed = 0usize;
        let mut last_scan = t0;
        loop {
            let now = Instant::now();
            if STOP.load(Ordering::SeqCst) || now > setup_deadline {
                break;
            }
            let due = ((now - t0).as_secs_f64() * h.a.cps as f64) as usize + 1;
            while placed < due.min(n) {
                h.send_invite(placed, now);
                placed += 1;
            }
            if now - last_scan >= Duration::from_millis(20) {
                h.retransmit(now);
                last_scan = now;
            }
            let (est, failed) = h.counts();
            if est + failed == n && h.uas_calls.values().all(|c| c.acked || c.ended) {
                break;
            }
            h.poll(Duration::from_millis(2))?;
        }
        let (est, failed) = h.counts();
        let setup_secs = t0.elapsed().as_secs_f64();
        if est < n {
            eprintln!(
                "rtp_load setup: only {est}/{n} calls established ({failed} failed) in {setup_secs:.1} s"
            );
            h.hang_up()?;
            return Err("setup incomplete".into());
        }
        h.write_files()?;
        let anchored_a = (0..n)
            .filter(|&i| {
                h.calls[i]
                    .media
                    .as_ref()
                    .is_some_and(|m| m.1 != h.a.b_port(i))
            })
            .count();
        let anchored_b = (0..n)
            .filter(|&i| h.b_side[i].as_ref().is_some_and(|m| m.1 != h.a.a_port(i)))
            .count();
        let b_addrs: std::collections::BTreeSet<&str> =
            h.b_side.iter().flatten().map(|m| m.0.as_str()).collect();
        println!(
            "setup {n} calls in {setup_secs:.1} s anchored_a={anchored_a} anchored_b={anchored_b} \
             b_sdp_addr={}",
            b_addrs.into_iter().collect::<Vec<_>>().join(",")
        );
        let _ = std::io::stdout().flush();
        if let Some(r) = &h.a.ready {
            std::fs::write(r, format!("{n}\n")).map_err(|e| format!("{r}: {e}"))?;
        }

        // Phase 2: hold, answering in-dialog requests.
        let hold_end = Instant::now() + h.a.hold;
        while !STOP.load(Ordering::SeqCst) && Instant::now() < hold_end {
            h.poll(Duration::from_millis(200))?;
            h.retransmit(Instant::now());
        }

        // Phase 3: BYE for every call.
        h.hang_up()
    }

    impl Harness {
        fn counts(&self) -> (usize, usize) {
            let est = self
                .calls
                .iter()
                .filter(|c| matches!(c.state, State::Established | State::ByeSent | State::Ended))
                .count();
            let failed = self
                .calls
                .iter()
                .filter(|c| c.state == State::Failed)
                .count();
            (est, failed)
        }

        fn branch(&mut self) -> String {
            self.seq += 1;
            format!("z9hG4bK-rl{}-{}", self.pid, self.seq)
        }

        fn uac_addr(&self) -> String {
            self.uac_contact
                .trim_matches(['<', '>'])
                .rsplit('@')
                .next()
                .unwrap_or_default()
                .to_string()
        }

        fn send_invite(&mut self, i: usize, now: Instant) {
            let branch = self.branch();
            let sdp = sip::sdp(self.a.a_port(i), i);
            let user = format!("1555{i:07}");
            let c = &self.calls[i];
            let invite = format!(
                "INVITE sip:{user}@{sip} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {me};branch={branch};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:rtpload@{me}>;tag={tag}\r\n\
                 To: <sip:{user}@{sip}>\r\n\
                 Call-ID: {cid}\r\n\
                 CSeq: 1 INVITE\r\n\
                 Contact: {contact}\r\n\
                 Content-Type: application/sdp\r\n\
                 Content-Length: {len}\r\n\r\n{sdp}",
                sip = self.a.sip,
                me = self.uac_addr(),
                tag = c.from_tag,
                cid = c.call_id,
                contact = self.uac_contact,
                len = sdp.len(),
            )
            .into_bytes();
            let _ = self.uac.send_to(&invite, self.a.sip);
            let c = &mut self.calls[i];
            c.invite = invite;
            c.branch = branch;
            c.state = State::Calling;
            c.started = now;
            c.interval = T1;
            c.next_retx = now + T1;
        }

        /// A request inside an established A-leg dialog (RFC 3261 §12.2.1.1).
        fn in_dialog(&mut self, i: usize, method: &str, cseq: u32) -> Vec<u8> {
            let branch = self.branch();
            let me = self.uac_addr();
            let c = &self.calls[i];
            let mut out = format!(
                "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n\
                 Max-Forwards: 70\r\n",
                target = c.target
            );
            for r in &c.routes {
                out.push_str(&format!("Route: {r}\r\n"));
            }
            out.push_str(&format!(
                "From: <sip:rtpload@{me}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
                 CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
                tag = c.from_tag,
                to = c.to,
                cid = c.call_id
            ));
            out.into_bytes()
        }

        /// Retransmissions: INVITE (Timer A/B), UAS 2xx until ACK (§13.3.1.4), BYE (Timer E/F).
        fn retransmit(&mut self, now: Instant) {
            for c in self.calls.iter_mut() {
                match c.state {
                    State::Calling | State::ByeSent if now >= c.next_retx => {
                        if now - c.started > TIMER_B {
                            c.state = if c.state == State::ByeSent {
                                State::Ended
                            } else {
                                State::Failed
                            };
                            continue;
                        }
                        let msg = if c.state == State::Calling {
                            &c.invite
                        } else {
                            &c.bye
                        };
                        let _ = self.uac.send_to(msg, self.a.sip);
                        c.interval = (c.interval * 2).min(if c.state == State::Calling {
                            Duration::from_secs(3600)
                        } else {
                            T2
                        });
                        c.next_retx = now + c.interval;
                    }
                    State::Proceeding if now - c.started > TIMER_B => c.state = State::Failed,
                    _ => {}
                }
            }
            for u in self.uas_calls.values_mut() {
                if u.acked || u.ended || now < u.next_retx {
                    continue;
                }
                if now - u.started > TIMER_B {
                    u.ended = true; // §13.3.1.4: no ACK within 64*T1; give up on it
                    continue;
                }
                let _ = self.uas.send_to(&u.ok, self.a.sip);
                u.interval = (u.interval * 2).min(T2);
                u.next_retx = now + u.interval;
            }
        }

        /// Waits up to `timeout` for datagrams on either socket and handles all of them.
        fn poll(&mut self, timeout: Duration) -> Result<(), String> {
            let mut fds = [
                libc::pollfd {
                    fd: self.uac.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.uas.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout.as_millis() as libc::c_int) };
            if r <= 0 {
                return Ok(()); // timeout or EINTR (a signal: the caller checks STOP)
            }
            let mut buf = vec![0u8; 65_536];
            for side in 0..2 {
                // Bounded drain: at most 4096 datagrams per socket per poll.
                for _ in 0..4096 {
                    let sock = if side == 0 { &self.uac } else { &self.uas };
                    let (len, from) = match sock.recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break,
                        Err(_) => break, // ICMP errors etc.: nothing to do
                    };
                    if !from.ip().is_loopback() {
                        continue;
                    }
                    let data = buf[..len].to_vec();
                    let Some(m) = Msg::parse(&data) else { continue };
                    if side == 0 {
                        self.on_uac(&m, from);
                    } else {
                        self.on_uas(&m, from);
                    }
                }
            }
            Ok(())
        }

        fn on_uac(&mut self, m: &Msg<'_>, from: SocketAddr) {
            let Some(&i) = m.call_id().and_then(|c| self.by_call_id.get(c)) else {
                if !m.is_response() && m.method() != Some("ACK") {
                    let r =
                        sip::response(m, 481, "Call/Transaction Does Not Exist", "x", None, None);
                    let _ = self.uac.send_to(&r, from);
                }
                return;
            };
            if !m.is_response() {
                return self.uac_request(i, m, from);
            }
            let (Some(code), Some((_, cmethod))) = (m.status(), m.cseq()) else {
                return;
            };
            match cmethod {
                "INVITE" => match (self.calls[i].state, code) {
                    (State::Calling, 100..=199) => self.calls[i].state = State::Proceeding,
                    (State::Calling | State::Proceeding, 200..=299) => {
                        let c = &mut self.calls[i];
                        c.to = m.header("to").unwrap_or_default().to_string();
                        c.target = m
                            .header("contact")
                            .map(sip::uri)
                            .unwrap_or_default()
                            .to_string();
                        if c.target.is_empty() {
                            c.target = format!("sip:{}", self.a.sip);
                        }
                        // §12.1.2: the UAC's route set is the Record-Route list in reverse.
                        c.routes = m.all("record-route").map(str::to_string).collect();
                        c.routes.reverse();
                        c.media = sip::sdp_audio(m.body);
                        c.state = State::Established;
                        let ack = self.in_dialog(i, "ACK", 1);
                        let _ = self.uac.send_to(&ack, self.a.sip);
                        self.calls[i].ack = ack;
                    }
                    (State::Calling | State::Proceeding, 300..) => {
                        // §17.1.1.3: the non-2xx ACK reuses the INVITE's branch.
                        let c = &self.calls[i];
                        let ack = format!(
                            "ACK sip:{}@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={};rport\r\n\
                             Max-Forwards: 70\r\nFrom: <sip:rtpload@{}>;tag={}\r\nTo: {}\r\n\
                             Call-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                            format_args!("1555{i:07}"),
                            self.a.sip,
                            self.uac_addr(),
                            c.branch,
                            self.uac_addr(),
                            c.from_tag,
                            m.header("to").unwrap_or_default(),
                            c.call_id
                        );
                        let _ = self.uac.send_to(ack.as_bytes(), self.a.sip);
                        eprintln!("rtp_load setup: call {i} rejected with {code}");
                        self.calls[i].state = State::Failed;
                    }
                    (State::Established | State::ByeSent | State::Ended, 200..=299) => {
                        // A retransmitted 2xx: our ACK was lost (§13.2.2.4).
                        let _ = self.uac.send_to(&self.calls[i].ack, self.a.sip);
                    }
                    _ => {}
                },
                "BYE" if code >= 200 && self.calls[i].state == State::ByeSent => {
                    self.calls[i].state = State::Ended;
                }
                _ => {}
            }
        }

        fn uac_request(&mut self, i: usize, m: &Msg<'_>, from: SocketAddr) {
            let method = m.method().unwrap_or_default();
            let tag = self.calls[i].from_tag.clone();
            let r = match method {
                "ACK" => return,
                "BYE" => {
                    self.calls[i].state = State::Ended;
                    sip::response(m, 200, "OK", &tag, None, None)
                }
                "INVITE" | "UPDATE" => {
                    let sdp = (!m.body.is_empty()).then(|| sip::sdp(self.a.a_port(i), i));
                    sip::response(m, 200, "OK", &tag, Some(&self.uac_contact), sdp.as_deref())
                }
                _ => sip::response(m, 200, "OK", &tag, None, None),
            };
            let _ = self.uac.send_to(&r, from);
        }

        fn on_uas(&mut self, m: &Msg<'_>, from: SocketAddr) {
            let Some(cid) = m.call_id() else { return };
            if m.is_response() {
                return; // we send no requests from the UAS side
            }
            let method = m.method().unwrap_or_default();
            if let Some(u) = self.uas_calls.get_mut(cid) {
                let in_dialog = m.to_tag().is_some();
                match method {
                    "INVITE" if !in_dialog => {
                        // A retransmission of the initial INVITE: the same 2xx again.
                        let _ = self.uas.send_to(&u.ok, from);
                    }
                    "ACK" => u.acked = true,
                    "BYE" => {
                        u.ended = true;
                        let r = sip::response(m, 200, "OK", &u.to_tag, None, None);
                        let _ = self.uas.send_to(&r, from);
                    }
                    "INVITE" | "UPDATE" => {
                        let port = self.a.b_port(u.index);
                        let sdp = (!m.body.is_empty()).then(|| sip::sdp(port, u.index));
                        let r = sip::response(
                            m,
                            200,
                            "OK",
                            &u.to_tag,
                            Some(&self.uas_contact),
                            sdp.as_deref(),
                        );
                        let _ = self.uas.send_to(&r, from);
                    }
                    _ => {
                        let r = sip::response(m, 200, "OK", &u.to_tag, None, None);
                        let _ = self.uas.send_to(&r, from);
                    }
                }
                return;
            }
            match method {
                "INVITE" if m.to_tag().is_none() => self.uas_new_call(cid, m, from),
                "ACK" => {}
                "OPTIONS" => {
                    let r = sip::response(m, 200, "OK", "uas", None, None);
                    let _ = self.uas.send_to(&r, from);
                }
                _ => {
                    let r =
                        sip::response(m, 481, "Call/Transaction Does Not Exist", "uas", None, None);
                    let _ = self.uas.send_to(&r, from);
                }
            }
        }

        /// holdfast's B-leg INVITE: answer 200 with our B port. The call index comes from
        /// the dialed number we put in the A-leg Request-URI (holdfast carries it to To);
        /// failing that, the next unused index.
        fn uas_new_call(&mut self, cid: &str, m: &Msg<'_>, from: SocketAddr) {
            let n = self.a.calls;
            let parsed = m
                .header("to")
                .map(sip::uri)
                .and_then(sip::user)
                .and_then(|u| u.trim_start_matches('+').strip_prefix("1555"))
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|&i| i < n && !self.b_used[i]);
            let index = match parsed {
                Some(i) => i,
                None => {
                    while self.b_next_free < n && self.b_used[self.b_next_free] {
                        self.b_next_free += 1;
                    }
                    if self.b_next_free >= n {
                        let r = sip::response(m, 486, "Busy Here", "uas", None, None);
                        let _ = self.uas.send_to(&r, from);
                        return;
                    }
                    self.b_next_free
                }
            };
            self.b_used[index] = true;
            self.b_side[index] = sip::sdp_audio(m.body);
            let to_tag = format!("b{index}x{}", self.pid);
            let sdp = sip::sdp(self.a.b_port(index), index);
            let ok = sip::response(m, 200, "OK", &to_tag, Some(&self.uas_contact), Some(&sdp));
            let _ = self.uas.send_to(&ok, from);
            let now = Instant::now();
            self.uas_calls.insert(
                cid.to_string(),
                UasCall {
                    index,
                    to_tag,
                    ok,
                    acked: false,
                    ended: false,
                    next_retx: now + T1,
                    interval: T1,
                    started: now,
                },
            );
        }

        fn write_files(&self) -> Result<(), String> {
            let mut pairs = String::new();
            let mut ports = String::new();
            for (i, c) in self.calls.iter().enumerate() {
                let Some((addr, port)) = &c.media else {
                    return Err(format!("call {i}: no SDP in the 2xx"));
                };
                if !addr.starts_with("127.") {
                    return Err(format!("call {i}: media address {addr} is not loopback"));
                }
                pairs.push_str(&format!("{} {port}\n", self.a.a_port(i)));
                ports.push_str(&format!("{}\n", self.a.b_port(i)));
            }
            std::fs::write(&self.a.pairs, pairs).map_err(|e| format!("{}: {e}", self.a.pairs))?;
            std::fs::write(&self.a.ports, ports).map_err(|e| format!("{}: {e}", self.a.ports))?;
            Ok(())
        }

        /// BYE every established call, paced at 1000/s, retransmitted until answered;
        /// bounded by BYE_PHASE.
        fn hang_up(&mut self) -> Result<(), String> {
            let t0 = Instant::now();
            let end = t0 + BYE_PHASE;
            let todo: Vec<usize> = (0..self.calls.len())
                .filter(|&i| self.calls[i].state == State::Established)
                .collect();
            let mut next = 0usize;
            let mut last_scan = t0;
            loop {
                let now = Instant::now();
                let due = (((now - t0).as_secs_f64() * 1000.0) as usize + 1).min(todo.len());
                while next < due {
                    let i = todo[next];
                    let bye = self.in_dialog(i, "BYE", 2);
                    let _ = self.uac.send_to(&bye, self.a.sip);
                    let c = &mut self.calls[i];
                    c.bye = bye;
                    c.state = State::ByeSent;
                    c.started = now;
                    c.interval = T1;
                    c.next_retx = now + T1;
                    next += 1;
                }
                let open = self
                    .calls
                    .iter()
                    .filter(|c| c.state == State::ByeSent)
                    .count();
                if (next == todo.len() && open == 0) || now > end {
                    break;
                }
                if now - last_scan >= Duration::from_millis(20) {
                    self.retransmit(now);
                    last_scan = now;
                }
                self.poll(Duration::from_millis(2))?;
            }
            let ended = todo
                .iter()
                .filter(|&&i| self.calls[i].state == State::Ended)
                .count();
            println!("bye {ended}/{} calls", todo.len());
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// latency: paced timestamping generator + receiver.

mod latency {
    use super::*;

    /// 12-byte RTP header, 4-byte magic, 8-byte send time (ns), 4-byte stream index.
    pub const MIN_SIZE: usize = 28;
    const MAGIC: &[u8; 4] = b"HFLT";
    const BUCKET_NS: u64 = 100;
    const BUCKETS: usize = 1_000_000; // 100 ns buckets up to 100 ms; beyond: overflow
    const BATCH: usize = 64;
    const IDLE_NS: u64 = 500_000_000;

    struct Recv {
        got: u64,
        hist: Vec<u32>,
        over: u64,
        max_ns: u64,
    }

    pub fn run(a: LatencyArgs) -> Result<(), String> {
        let pairs = read_pairs(&a.pairs)?;
        let ports = read_ports(&a.ports)?;
        // The receiver's sockets exist before the first packet is sent.
        let mut sinks = Vec::with_capacity(ports.len());
        for &p in &ports {
            let s = UdpSocket::bind((LOOPBACK, p)).map_err(|e| format!("bind sink {p}: {e}"))?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            set_buf(&s, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, 1 << 20);
            sinks.push(s);
        }
        let mut srcs = Vec::with_capacity(pairs.len());
        for &(sp, dp) in &pairs {
            let s = UdpSocket::bind((LOOPBACK, sp)).map_err(|e| format!("bind src {sp}: {e}"))?;
            set_buf(&s, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, 1 << 20);
            srcs.push((s, SocketAddr::new(LOOPBACK, dp)));
        }
        let done_at = Arc::new(AtomicU64::new(0));
        let hard_end = mono_ns() + ((a.secs + 6.0) * 1e9) as u64;
        let rx = {
            let done_at = done_at.clone();
            std::thread::spawn(move || receive(sinks, &done_at, hard_end))
        };

        let total = (a.rate * a.secs) as u64;
        let mut buf = vec![0xD5u8; a.size];
        buf[0] = 0x80;
        buf[1] = 8;
        buf[12..16].copy_from_slice(MAGIC);
        let mut seq = vec![0u16; srcs.len()];
        let (mut sent, mut errs, mut stream) = (0u64, 0u64, 0usize);
        let t0 = mono_ns();
        let deadline = t0 + ((a.secs + 2.0) * 1e9) as u64;
        while sent < total {
            let t = mono_ns();
            if t > deadline {
                break;
            }
            let due = ((((t - t0) as f64) * 1e-9 * a.rate) as u64).min(total);
            if sent >= due {
                // Same pacing as udpgen: sleep 50 µs (never spin: the receiver shares the CPU).
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            while sent < due {
                let i = stream % srcs.len();
                stream += 1;
                let s = seq[i];
                seq[i] = s.wrapping_add(1);
                buf[2..4].copy_from_slice(&s.to_be_bytes());
                buf[4..8].copy_from_slice(&(u32::from(s) * 160).to_be_bytes());
                buf[8..12].copy_from_slice(&(0x2000_0000u32 + i as u32).to_be_bytes());
                buf[24..28].copy_from_slice(&(i as u32).to_be_bytes());
                buf[16..24].copy_from_slice(&mono_ns().to_le_bytes());
                let (sock, dst) = &srcs[i];
                if sock.send_to(&buf, dst).is_err() {
                    errs += 1;
                }
                sent += 1;
            }
        }
        let elapsed = (mono_ns() - t0) as f64 * 1e-9;
        done_at.store(mono_ns(), Ordering::SeqCst);
        let r = rx.join().map_err(|_| "receiver thread panicked")??;

        let pct = |q: f64| -> f64 {
            if r.got == 0 {
                return f64::NAN;
            }
            let rank = ((q * r.got as f64).ceil() as u64).max(1);
            let mut acc = 0u64;
            for (b, &c) in r.hist.iter().enumerate() {
                acc += u64::from(c);
                if acc >= rank {
                    return (b as u64 * BUCKET_NS + BUCKET_NS / 2) as f64 / 1000.0;
                }
            }
            r.max_ns as f64 / 1000.0 // in the overflow range
        };
        let loss = if sent > 0 {
            100.0 * (sent as f64 - r.got as f64) / sent as f64
        } else {
            0.0
        };
        println!(
            "streams={} rate={:.0} sent={sent} recv={} loss%={loss:.3} pps={:.0} p50_us={:.1} \
             p99_us={:.1} p999_us={:.1} max_us={:.1} over100ms={} errs={errs}",
            srcs.len(),
            a.rate,
            r.got,
            sent as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            pct(0.999),
            r.max_ns as f64 / 1000.0,
            r.over,
        );
        Ok(())
    }

    fn receive(sinks: Vec<UdpSocket>, done_at: &AtomicU64, hard_end: u64) -> Result<Recv, String> {
        // SAFETY: plain syscalls on fds we own; every buffer outlives the calls using it.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err("epoll_create1 failed".into());
        }
        for (k, s) in sinks.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: k as u64,
            };
            // SAFETY: valid epoll fd, socket fd and event pointer.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) } != 0 {
                // SAFETY: closing the epoll fd we created.
                unsafe { libc::close(ep) };
                return Err("epoll_ctl failed".into());
            }
        }
        let mut bufs = vec![[0u8; 2048]; BATCH];
        // SAFETY: zeroed iovec/mmsghdr are valid (null pointers, zero lengths) until filled.
        let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        for j in 0..BATCH {
            iov[j].iov_base = bufs[j].as_mut_ptr().cast();
            iov[j].iov_len = 2048;
            msgs[j].msg_hdr.msg_iov = &mut iov[j];
            msgs[j].msg_hdr.msg_iovlen = 1;
        }
        let mut evs: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut r = Recv {
            got: 0,
            hist: vec![0u32; BUCKETS],
            over: 0,
            max_ns: 0,
        };
        let mut last_rx = 0u64;
        loop {
            let t = mono_ns();
            if t > hard_end {
                break;
            }
            let d = done_at.load(Ordering::SeqCst);
            if d != 0 && t.saturating_sub(d.max(last_rx)) > IDLE_NS {
                break;
            }
            // SAFETY: `evs` has room for 256 events.
            let k = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 256, 50) };
            for e in evs.iter().take(k.max(0) as usize) {
                let Some(s) = sinks.get(e.u64 as usize) else {
                    continue;
                };
                // Bounded drain per wakeup: the socket buffer holds a few thousand packets.
                for _ in 0..1024 {
                    // SAFETY: `msgs` points at BATCH valid iovecs/buffers owned above.
                    let n = unsafe {
                        libc::recvmmsg(
                            s.as_raw_fd(),
                            msgs.as_mut_ptr(),
                            BATCH as libc::c_uint,
                            libc::MSG_DONTWAIT,
                            std::ptr::null_mut(),
                        )
                    };
                    if n <= 0 {
                        break;
                    }
                    let now = mono_ns();
                    last_rx = now;
                    for (m, b) in msgs.iter().zip(bufs.iter()).take(n as usize) {
                        let len = m.msg_len as usize;
                        if len < MIN_SIZE || &b[12..16] != MAGIC {
                            continue;
                        }
                        let mut ts = [0u8; 8];
                        ts.copy_from_slice(&b[16..24]);
                        let lat = now.saturating_sub(u64::from_le_bytes(ts));
                        r.got += 1;
                        r.max_ns = r.max_ns.max(lat);
                        match r.hist.get_mut((lat / BUCKET_NS) as usize) {
                            Some(c) => *c += 1,
                            None => r.over += 1,
                        }
                    }
                    if (n as usize) < BATCH {
                        break;
                    }
                }
            }
        }
        // SAFETY: closing the epoll fd we created.
        unsafe { libc::close(ep) };
        Ok(r)
    }
}
