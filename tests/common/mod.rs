//! Shared harness for the integration tests: holdfast as a child process on a generated
//! config, SIPp peers on free loopback ports, and JSON log watching. Every child is killed
//! on drop, so a failing test leaves nothing running.
#![allow(dead_code)]
pub mod dns;
pub mod http;
pub mod scenarios;
pub mod ws;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A free loopback port for both UDP and TCP, never handed out twice in this process.
pub fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().unwrap().port();
        if port % 2 == 1 || port > 60000 {
            continue; // even ports leave port+1/+2 room for SIPp's media sockets
        }
        let Ok(_tcp) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        let Ok(_udp2) = UdpSocket::bind(("127.0.0.1", port + 2)) else {
            continue;
        };
        let mut u = used.lock().unwrap();
        if u.insert(port) && u.insert(port + 2) {
            return port;
        }
    }
}

/// A relay port range of `ports` ports for one holdfast instance: in 20000-29999 (below the
/// kernel's ephemeral range, clear of rtpengine's usual 30000+), distinct for every instance
/// a test binary starts (tests run in parallel), and skipping ranges where another process
/// (a test binary or benchmark running at the same time) holds one of the ports right now. The check is a moment's bind of
/// each port, so a range can still be taken afterwards, but not one already in use.
pub fn media_ports(ports: u16) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 20000;
    const SPAN: u32 = 10000;
    let n = u32::from(ports.max(4)).next_multiple_of(4);
    let offset = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN / n {
        let at = NEXT.fetch_add(n, Ordering::Relaxed);
        let lo = BASE + (offset + at) % (SPAN - n);
        let lo = lo - lo % 2;
        let hi = lo + n - 1;
        let free = (lo..=hi)
            .map(|p| UdpSocket::bind(("127.0.0.1", p as u16)))
            .collect::<Result<Vec<_>, _>>()
            .is_ok();
        if free {
            return format!("{lo}-{hi}");
        }
    }
    panic!(
        "no free media port range of {ports} ports in {BASE}-{}",
        BASE + SPAN - 1
    );
}

/// A log line from holdfast's JSON log.
pub type LogLine = serde_json::Value;

/// Whether [`Holdfast::start_with_env`] gives every instance an admin API section of its
/// own (a free loopback port) when the test's YAML has none: tests run in parallel and the
/// admin API's default port (127.0.0.1:9090) can only be had once. Set false only to run
/// the older tests against a build whose config parser does not know `admin:` yet.
pub const ADMIN_KEYS: bool = true;

/// The admin API's listen address when the config does not say (ADMIN_API.md).
pub const ADMIN_DEFAULT_LISTEN: &str = "127.0.0.1:9090";

/// A running holdfast.
pub struct Holdfast {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    logs: Arc<Mutex<Vec<(Instant, LogLine)>>>,
    pub started: Instant,
    /// Where the admin API listens: the section the harness added, or the test's own
    /// `admin.listen`; None for `listen: off` (or with [`ADMIN_KEYS`] false and no section).
    pub admin: Option<SocketAddr>,
    /// The `admin:` section the harness appended to the test's YAML, appended again on
    /// every rewrite of the file so a reload keeps the admin API where it is.
    admin_section: Option<String>,
}

/// The `admin:` section to append to `yaml` (None when the YAML has its own) and where the
/// admin API will listen.
fn admin_for(yaml: &str) -> (Option<String>, Option<SocketAddr>) {
    match admin_listen(yaml) {
        Some(listen) => (None, listen),
        None if ADMIN_KEYS => {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            (Some(format!("admin:\n  listen: {addr}\n")), Some(addr))
        }
        None => (None, None),
    }
}

/// `yaml` with the harness's admin section (if any) appended.
fn with_admin(yaml: &str, section: Option<&str>) -> String {
    match section {
        Some(s) if yaml.ends_with('\n') || yaml.is_empty() => format!("{yaml}{s}"),
        Some(s) => format!("{yaml}\n{s}"),
        None => yaml.to_string(),
    }
}

/// The admin API address a YAML file asks for: None when it has no top-level `admin:` key,
/// Some(None) for `listen: off` (or an address this helper cannot read), the default when
/// the section has no `listen`. Reads block style (`admin:` then indented keys) and flow
/// style (`admin: { listen: ..., token_env: ... }`).
pub fn admin_listen(yaml: &str) -> Option<Option<SocketAddr>> {
    let mut lines = yaml.lines();
    let first = lines.by_ref().find(|l| {
        l.strip_prefix("admin:")
            .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '{', '#']))
    })?;
    let clean = |v: &str| {
        let v = v.split(" #").next().unwrap_or("").trim();
        v.trim_matches(|c| c == '"' || c == '\'').to_string()
    };
    let inline = first["admin:".len()..].trim();
    let value = if inline.starts_with('{') {
        inline
            .trim_start_matches('{')
            .split(['}', ','])
            .find_map(|kv| kv.trim().strip_prefix("listen:").map(clean))
    } else {
        lines
            .take_while(|l| l.starts_with([' ', '\t']) || l.trim().is_empty())
            .find_map(|l| l.trim().strip_prefix("listen:").map(clean))
    };
    let value = value.unwrap_or_else(|| ADMIN_DEFAULT_LISTEN.to_string());
    if value == "off" {
        return Some(None);
    }
    Some(value.parse().ok())
}

impl Holdfast {
    /// Starts holdfast on `yaml` (which must listen on `port`) and waits until it listens.
    pub fn start(yaml: &str, port: u16) -> Holdfast {
        Holdfast::start_with_env(yaml, port, &[])
    }

    /// As [`Holdfast::start`], with extra environment variables (API keys named in the
    /// config).
    pub fn start_with_env(yaml: &str, port: u16, env: &[(&str, &str)]) -> Holdfast {
        Holdfast::spawn(yaml, port, env, None)
    }

    /// As [`Holdfast::start`], with the child's RLIMIT_NOFILE set to `soft` and `hard`
    /// before it runs (as `ulimit -Sn soft -Hn hard` or systemd's `LimitNOFILE=` would).
    pub fn start_with_nofile(yaml: &str, port: u16, soft: u64, hard: u64) -> Holdfast {
        Holdfast::spawn(yaml, port, &[], Some((soft, hard)))
    }

    fn spawn(yaml: &str, port: u16, env: &[(&str, &str)], nofile: Option<(u64, u64)>) -> Holdfast {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("holdfast.yaml");
        let (admin_section, admin) = admin_for(yaml);
        std::fs::write(&config_path, with_admin(yaml, admin_section.as_deref()))
            .expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        cmd.args([
            "--log-format",
            "json",
            "--log-level",
            "holdfast=debug,info",
            "run",
            "--config",
        ])
        .arg(&config_path)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some((soft, hard)) = nofile {
            with_nofile(&mut cmd, soft, hard);
        }
        let mut child = cmd.spawn().expect("spawn holdfast");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("HOLDFAST_TEST_LOG").is_some() {
                    eprintln!("[holdfast:{port}] {line}");
                }
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "message": line }));
                sink.lock().unwrap().push((Instant::now(), v));
            }
        });
        let hf = Holdfast {
            child,
            port,
            dir,
            config_path,
            logs,
            started: Instant::now(),
            admin,
            admin_section,
        };
        hf.wait_log(Duration::from_secs(20), |l| msg(l) == "holdfast is up")
            .unwrap_or_else(|| panic!("holdfast did not start; logs:\n{}", hf.dump_logs()));
        hf
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line matching `pred`; returns when it was seen.
    pub fn wait_log(
        &self,
        timeout: Duration,
        pred: impl Fn(&LogLine) -> bool,
    ) -> Option<(Instant, LogLine)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.find_log(&pred) {
                return Some(found);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn find_log(&self, pred: impl Fn(&LogLine) -> bool) -> Option<(Instant, LogLine)> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| pred(l))
            .cloned()
    }

    pub fn count_logs(&self, pred: impl Fn(&LogLine) -> bool) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| pred(l))
            .count()
    }

    pub fn dump_logs(&self) -> String {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for holdfast to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Rewrites the config file and sends SIGHUP.
    pub fn reload(&self, yaml: &str) {
        self.write_config(yaml);
        signal(self.child.id(), "HUP");
    }

    /// Rewrites the config file (with the harness's admin section, as at start) without
    /// telling holdfast: for `POST /reload`.
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(
            &self.config_path,
            with_admin(yaml, self.admin_section.as_deref()),
        )
        .expect("write config");
    }

    /// The admin API's address; panics when the config turned it off.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .expect("this holdfast has no admin API (admin.listen: off?)")
    }
}

impl Drop for Holdfast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- holdfast logs (port {}) ----\n{}",
                self.port,
                self.dump_logs()
            );
        }
    }
}

/// Sets RLIMIT_NOFILE (`soft`, `hard`) in the child `cmd` starts, between fork and exec.
pub fn with_nofile(cmd: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits; the
    // closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The soft and hard "Max open files" of process `pid` (`/proc/<pid>/limits`).
pub fn proc_nofile(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut n = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    (n.next().expect("soft"), n.next().expect("hard"))
}

/// Descriptors process `pid` has open (`/proc/<pid>/fd`).
pub fn proc_open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The `message` (or `fields.message`) of a JSON log line.
pub fn msg(l: &LogLine) -> &str {
    l.get("message")
        .or_else(|| l.get("fields").and_then(|f| f.get("message")))
        .and_then(|m| m.as_str())
        .unwrap_or("")
}

/// A string field of a JSON log line.
pub fn field<'a>(l: &'a LogLine, name: &str) -> &'a str {
    l.get(name)
        .or_else(|| l.get("fields").and_then(|f| f.get(name)))
        .and_then(|m| m.as_str())
        .unwrap_or("")
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A SIPp process.
pub struct Sipp {
    child: Option<Child>,
    /// The address its sockets are on (`127.0.0.1` unless spawned on another).
    pub ip: std::net::IpAddr,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// What a finished SIPp reported.
#[derive(Debug)]
pub struct SippResult {
    pub status: ExitStatus,
    pub output: String,
    pub errors: String,
    /// INVITE→200 (or whatever `rtd` marks) times in ms, from SIPp's -trace_rtt file.
    pub rtts: Vec<f64>,
    /// The scenario's `<log>` output (-trace_logs), empty without it.
    pub scenario_log: String,
    /// The message trace (-trace_msg), empty without it.
    pub messages: String,
}

impl SippResult {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Response times (ms) SIPp measured for `rtd` in the scenario (-trace_rtt).
    pub fn rtts_ms(&self) -> Vec<f64> {
        self.rtts.clone()
    }
}

fn read_rtts(dir: &Path) -> Vec<f64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.to_string_lossy().ends_with("_rtt.csv") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            // Date_ms;response_time_ms;rtd_no (as ../shared/peers/tools/sippstats.py reads it)
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split(';').collect();
                if let Some(v) = cols.get(1).and_then(|v| v.trim().parse::<f64>().ok()) {
                    out.push(v);
                }
            }
        }
    }
    out
}

impl Sipp {
    fn spawn(name: &str, scenario: &str, port: u16, args: &[String]) -> Sipp {
        Sipp::spawn_on("127.0.0.1", name, scenario, port, args)
    }

    /// SIPp with its SIP and media sockets on `ip` (`127.0.0.1`, or `::1` for an IPv6
    /// peer: SIPp then writes `[local_ip]` bracketed and `[media_ip_type]` as 6).
    fn spawn_on(ip: &str, name: &str, scenario: &str, port: u16, args: &[String]) -> Sipp {
        let dir = tempfile::tempdir().expect("tempdir");
        let sf = dir.path().join(format!("{name}.xml"));
        std::fs::write(&sf, scenario).expect("write scenario");
        let media = free_port();
        let child = Command::new("sipp")
            .current_dir(dir.path())
            .arg("-sf")
            .arg(&sf)
            .args(["-i", ip, "-p", &port.to_string(), "-mi", ip])
            .args([
                "-mp",
                &media.to_string(),
                "-nostdin",
                "-trace_err",
                "-trace_rtt",
                "-rtt_freq",
                "1",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.txt")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.txt")).unwrap())
            .spawn()
            .expect("spawn sipp (is sip-tester installed?)");
        Sipp {
            child: Some(child),
            ip: ip.parse().expect("an IP"),
            port,
            dir,
            name: name.to_string(),
        }
    }

    /// A SIPp UAS on `port` that answers OPTIONS pings (-aa) and runs `scenario` for each call.
    /// With `calls`, it exits after that many calls (and its exit code says whether they
    /// all followed the scenario).
    pub fn uas(name: &str, scenario: &str, port: u16, calls: Option<u32>) -> Sipp {
        let mut args = vec!["-aa".to_string(), "-timeout".into(), "90s".into()];
        if let Some(m) = calls {
            args.extend(["-m".to_string(), m.to_string()]);
        }
        let mut s = Sipp::spawn(name, scenario, port, &args);
        s.wait_bound(port);
        s
    }

    /// A SIPp UAC placing `calls` calls to `target` (host:port) with R-URI user `service`.
    pub fn uac(
        name: &str,
        scenario: &str,
        port: u16,
        target: &str,
        service: &str,
        calls: u32,
        extra: &[&str],
    ) -> Sipp {
        Sipp::uac_on(
            "127.0.0.1",
            name,
            scenario,
            port,
            target,
            service,
            calls,
            extra,
        )
    }

    /// A SIPp UAS on TCP `port` for one call.
    pub fn spawn_tcp_uas(scenario: &str, port: u16) -> Sipp {
        let args: Vec<String> = ["-t", "t1", "-m", "1", "-timeout", "90s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = Sipp::spawn("tcp-uas", scenario, port, &args);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    }

    /// Waits until SIPp holds UDP `port`; panics with SIPp's own output if it exited.
    fn wait_bound(&mut self, port: u16) {
        self.wait_bound_on("127.0.0.1", port);
    }

    fn wait_bound_on(&mut self, ip: &str, port: u16) {
        let ip: std::net::IpAddr = ip.parse().expect("an IP");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if UdpSocket::bind((ip, port)).is_err() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    let r = self.result(st);
                    panic!(
                        "sipp {} exited ({}): {}\n{}",
                        self.name, r.status, r.output, r.errors
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("sipp {} never bound udp port {port}", self.name);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits for SIPp to exit (killing it after `timeout`).
    pub fn wait(mut self, timeout: Duration) -> SippResult {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.result(status)
    }

    /// Stops SIPp (SIGTERM-like kill) and returns what it reported.
    pub fn stop(mut self) -> SippResult {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let status = child.wait().unwrap();
        self.result(status)
    }

    fn result(&self, status: ExitStatus) -> SippResult {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        let mut errors = String::new();
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().to_string_lossy().ends_with("_errors.log") {
                errors.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        SippResult {
            status,
            output: read("stdout.txt") + &read("stderr.txt"),
            errors,
            rtts: read_rtts(self.dir.path()),
            scenario_log: self.scenario_log(),
            messages: self.messages(),
        }
    }

    /// Suspends (SIGSTOP) or resumes (SIGCONT) the process: a silenced peer.
    pub fn pause(&self, on: bool) {
        signal(self.pid(), if on { "STOP" } else { "CONT" });
    }

    /// Messages this SIPp received of `method` (from its -trace_msg log, when enabled).
    pub fn dir_path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until something holds UDP `port` on 127.0.0.1 (SIPp takes a moment to bind).
pub fn wait_udp_bound(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing bound udp port {port}");
}

/// The config the tests start from: one listener, fast health, and the targets given.
pub struct TestConfig {
    pub port: u16,
    pub carriers: Vec<String>,
    pub providers: Vec<String>,
    pub inbound: Vec<String>,
    pub outbound: Vec<String>,
    pub health: String,
    pub routing: String,
    /// The `media:` section's body (two-space indented keys).
    pub media: String,
    /// More `sip:` keys, each line two-space indented (e.g. `  answer_options: [...]\n`).
    pub sip: String,
    /// More top-level sections, written first (e.g. `node:\n  id: eu-1\n`).
    pub top: String,
}

impl TestConfig {
    pub fn new(port: u16) -> TestConfig {
        TestConfig {
            port,
            carriers: vec![],
            providers: vec![],
            inbound: vec![],
            outbound: vec![],
            health: "ping_interval: 5s\n  ping_timeout: 1s\n  down_after: 3\n  up_after: 2".into(),
            routing: "attempt_timeout: 1s\n  seed: 7".into(),
            media: format!("ports: \"{}\"", media_ports(64)),
            sip: String::new(),
            top: String::new(),
        }
    }

    pub fn yaml(&self) -> String {
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                " []".to_string()
            } else {
                v.iter().map(|s| format!("\n  - {s}")).collect()
            }
        };
        format!(
            "{}sip:\n  listen: [\"udp:127.0.0.1:{}\", \"tcp:127.0.0.1:{}\"]\n  t1: 100ms\n{}health:\n  {}\nrouting:\n  {}\nmedia:\n  {}\ncarriers:{}\nai_providers:{}\nroutes:\n  inbound:{}\n  outbound:{}\n",
            self.top,
            self.port,
            self.port,
            self.sip,
            self.health,
            self.routing,
            self.media,
            list(&self.carriers),
            list(&self.providers),
            list(&self.inbound).replace("\n  -", "\n    -"),
            list(&self.outbound).replace("\n  -", "\n    -"),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Media helpers (tests/media.rs): numeric log fields, SIPp's -trace_logs / -trace_msg files,
// waking a SIPp scenario that waits, and test-owned RTP endpoints.

/// A numeric field of a JSON log line.
pub fn num(l: &LogLine, name: &str) -> Option<i64> {
    let v = l
        .get(name)
        .or_else(|| l.get("fields").and_then(|f| f.get(name)))?;
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

impl Sipp {
    /// A SIPp UAS like [`Sipp::uas`] with extra command-line arguments (e.g. `-trace_logs`).
    pub fn uas_with(
        name: &str,
        scenario: &str,
        port: u16,
        calls: Option<u32>,
        extra: &[&str],
    ) -> Sipp {
        Sipp::uas_on("127.0.0.1", name, scenario, port, calls, extra)
    }

    /// A SIPp UAS like [`Sipp::uas_with`], its sockets on `ip` (e.g. `::1`).
    pub fn uas_on(
        ip: &str,
        name: &str,
        scenario: &str,
        port: u16,
        calls: Option<u32>,
        extra: &[&str],
    ) -> Sipp {
        let mut args = vec!["-aa".to_string(), "-timeout".into(), "90s".into()];
        if let Some(m) = calls {
            args.extend(["-m".to_string(), m.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Sipp::spawn_on(ip, name, scenario, port, &args);
        s.wait_bound_on(ip, port);
        s
    }

    /// A SIPp UAC like [`Sipp::uac`], its sockets on `ip`; `target` as SIPp takes it
    /// (`[::1]:5060` for IPv6).
    #[allow(clippy::too_many_arguments)]
    pub fn uac_on(
        ip: &str,
        name: &str,
        scenario: &str,
        port: u16,
        target: &str,
        service: &str,
        calls: u32,
        extra: &[&str],
    ) -> Sipp {
        let mut args: Vec<String> = vec![
            target.into(),
            "-s".into(),
            service.into(),
            "-m".into(),
            calls.to_string(),
            "-timeout".into(),
            "60s".into(),
            "-timeout_error".into(),
            "-aa".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Sipp::spawn_on(ip, name, scenario, port, &args)
    }

    /// A SIPp UAS like [`Sipp::uas_with`] (no call limit) but without `-aa`: requests its
    /// scenario does not expect (OPTIONS pings, holdfast's liveness checks) go unanswered.
    pub fn uas_silent(name: &str, scenario: &str, port: u16, extra: &[&str]) -> Sipp {
        let mut args = vec!["-timeout".to_string(), "90s".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Sipp::spawn(name, scenario, port, &args);
        s.wait_bound(port);
        s
    }

    fn read_suffix(&self, suffix: &str) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().to_string_lossy().ends_with(suffix) {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// What the scenario's `<log>` actions wrote so far (needs `-trace_logs`).
    pub fn scenario_log(&self) -> String {
        self.read_suffix("_logs.log")
    }

    /// The messages SIPp sent and received so far (needs `-trace_msg`).
    pub fn messages(&self) -> String {
        self.read_suffix("_messages.log")
    }

    /// The value of the first `KEY=value` line the scenario logged, once it is there.
    pub fn wait_value(&self, key: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let prefix = format!("{key}=");
        loop {
            let text = self.scenario_log();
            if let Some(v) = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string))
            {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Self::wait_value`] or a panic naming what was missing, with SIPp's files.
    pub fn expect_value(&self, key: &str, timeout: Duration) -> String {
        self.wait_value(key, timeout).unwrap_or_else(|| {
            panic!(
                "sipp {} never logged {key}; its log:\n{}\nerrors:\n{}",
                self.name,
                self.scenario_log(),
                self.read_suffix("_errors.log")
            )
        })
    }

    /// Wakes a scenario waiting in `<recv request="MESSAGE">` for call `call_id`: SIPp
    /// matches the request to the call by Call-ID, whoever sends it.
    pub fn poke(&self, call_id: &str) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sipp = SocketAddr::new(self.ip, self.port);
        let sock = UdpSocket::bind(SocketAddr::new(self.ip, 0)).expect("bind poke socket");
        let me = sock.local_addr().unwrap();
        let req = format!(
            "MESSAGE sip:sipp@{sipp} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-poke-{n}\r\n\
             From: <sip:test@{me}>;tag=poke{n}\r\n\
             To: <sip:sipp@{sipp}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} MESSAGE\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            cseq = 100 + n,
        );
        sock.send_to(req.as_bytes(), sipp).expect("send poke");
    }
}

/// A carrier call up through holdfast on `hp`: a SIPp UAC on `trunk` (SIPp traces on) calls
/// +15551230000 with media at `carrier`, and the call is confirmed. Returns the UAC, its
/// Call-ID (for [`Sipp::poke`]) and holdfast's carrier-side media address.
pub fn carrier_media_call(
    hp: u16,
    trunk: u16,
    carrier: &RtpEndpoint,
    timeout: Duration,
) -> (Sipp, String, std::net::SocketAddr) {
    let uac = Sipp::uac(
        "trunk",
        &scenarios::uac_media_call(carrier.port),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &["-trace_logs", "-trace_msg"],
    );
    let call_id = uac.expect_value("ANSWER_CALLID", timeout);
    uac.expect_value("CONFIRMED", timeout);
    let port: u16 = uac.expect_value("ANSWER_PORT", timeout).parse().unwrap();
    (
        uac,
        call_id,
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    )
}

/// Hangs the carrier's SIPp UAC up (poke) and checks its call was never disturbed: its
/// scenario fails on any BYE or re-INVITE from holdfast, and it saw one INVITE, its own.
pub fn carrier_hang_up(uac: Sipp, call_id: &str) -> SippResult {
    uac.poke(call_id);
    let r = uac.wait(Duration::from_secs(30));
    assert!(
        r.success(),
        "the carrier side of {call_id} failed (a BYE or re-INVITE from holdfast?): {}\n{}\n{}",
        r.output,
        r.errors,
        r.messages
    );
    assert_eq!(
        r.messages.matches("INVITE sip:").count(),
        1,
        "the carrier saw one INVITE (its own):\n{}",
        r.messages
    );
    r
}

/// One RTP packet a [`RtpEndpoint`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpSeen {
    pub from: std::net::SocketAddr,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub len: usize,
    /// The first payload byte (after a plain 12-byte header): tells silence from audio.
    pub first: u8,
}

/// A test-owned RTP endpoint on 127.0.0.1: a thread records every RTP packet that arrives
/// (and, as an echo, sends each one straight back to its sender). Stops on drop.
pub struct RtpEndpoint {
    sock: Arc<UdpSocket>,
    pub port: u16,
    seen: Arc<Mutex<Vec<RtpSeen>>>,
    echoed: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether received packets are sent back (an echo that can fall silent).
    echo: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RtpEndpoint {
    /// An endpoint that only records.
    pub fn bind() -> RtpEndpoint {
        Self::start(false)
    }

    /// An endpoint that records and echoes every packet back to its source.
    pub fn echo() -> RtpEndpoint {
        Self::start(true)
    }

    /// An endpoint that only records, on another loopback address (e.g. "127.0.0.2": an
    /// "other IP" than the peers' 127.0.0.1).
    pub fn bind_on(ip: &str) -> RtpEndpoint {
        Self::start_on(ip, false)
    }

    /// An echoing endpoint on `ip` (e.g. "::1": an IPv6 peer).
    pub fn echo_on(ip: &str) -> RtpEndpoint {
        Self::start_on(ip, true)
    }

    /// This endpoint's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.sock.local_addr().expect("rtp endpoint address")
    }

    fn start(echo: bool) -> RtpEndpoint {
        Self::start_on("127.0.0.1", echo)
    }

    fn start_on(ip: &str, echo: bool) -> RtpEndpoint {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let sock = Arc::new(UdpSocket::bind((ip, 0)).expect("bind rtp endpoint"));
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let echoed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let echo = Arc::new(AtomicBool::new(echo));
        let thread = {
            let (sock, seen, echoed, stop, echo) = (
                sock.clone(),
                seen.clone(),
                echoed.clone(),
                stop.clone(),
                echo.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let b = &buf[..n];
                    if n < 12 || b[0] >> 6 != 2 {
                        continue; // not RTP
                    }
                    let pt = b[1] & 0x7f;
                    if (72..=79).contains(&pt) {
                        continue; // RTCP (RFC 5761 §4)
                    }
                    seen.lock().unwrap().push(RtpSeen {
                        from,
                        pt,
                        seq: u16::from_be_bytes([b[2], b[3]]),
                        ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                        len: n,
                        first: b.get(12).copied().unwrap_or(0),
                    });
                    if echo.load(Ordering::Relaxed) && sock.send_to(b, from).is_ok() {
                        echoed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        RtpEndpoint {
            sock,
            port,
            seen,
            echoed,
            echo,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops (or resumes) echoing; packets are still recorded.
    pub fn set_echo(&self, on: bool) {
        self.echo.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends `n` packets of one stream (PCMA, 20 ms each, sequence numbers from 1) to `to`
    /// from this endpoint's socket, one every `interval`, on a thread of its own: a caller
    /// talking while the test does other things. Join the handle to wait for the last one.
    pub fn talk(
        &self,
        to: std::net::SocketAddr,
        ssrc: u32,
        n: usize,
        interval: Duration,
    ) -> std::thread::JoinHandle<()> {
        self.talk_with(to, ssrc, n, interval, 0xd5)
    }

    /// As [`RtpEndpoint::talk`], every payload byte `byte` (0xd5 is A-law silence; anything
    /// else is a tone a test can recognise after a round trip).
    pub fn talk_with(
        &self,
        to: std::net::SocketAddr,
        ssrc: u32,
        n: usize,
        interval: Duration,
        byte: u8,
    ) -> std::thread::JoinHandle<()> {
        let sock = self.sock.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            for i in 0..n {
                let mut p = vec![0u8; 12 + 160];
                p[0] = 0x80;
                p[1] = 8;
                p[2..4].copy_from_slice(&(1 + i as u16).to_be_bytes());
                p[4..8].copy_from_slice(&(160 * i as u32).to_be_bytes());
                p[8..12].copy_from_slice(&ssrc.to_be_bytes());
                p[12..].fill(byte);
                let _ = sock.send_to(&p, to);
                let next = start + interval * (i as u32 + 1);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    }

    /// Every packet received so far.
    pub fn seen(&self) -> Vec<RtpSeen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Packets echoed back so far.
    pub fn echoed(&self) -> usize {
        self.echoed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until at least `n` packets arrived; returns how many did.
    pub fn wait_count(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.count();
            if c >= n || Instant::now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends one RTP packet (PCMA, 160-byte payload) to `to`.
    pub fn send_rtp(&self, to: std::net::SocketAddr, ssrc: u32, seq: u16, ts: u32) {
        self.send_rtp_with(to, ssrc, seq, ts, 0xd5);
    }

    /// As [`RtpEndpoint::send_rtp`], every payload byte `byte` (what [`RtpSeen::first`]
    /// shows at the receiver: whose audio got through).
    pub fn send_rtp_with(&self, to: std::net::SocketAddr, ssrc: u32, seq: u16, ts: u32, byte: u8) {
        let mut p = vec![0u8; 12 + 160];
        p[0] = 0x80;
        p[1] = 8;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p[12..].fill(byte);
        self.sock.send_to(&p, to).expect("send rtp");
    }

    /// Sends `n` packets of one stream (sequence numbers from `seq0`, 20 ms of PCMA each)
    /// to `to`, paced at one per half millisecond so no socket buffer on the way overflows.
    pub fn send_stream(&self, to: std::net::SocketAddr, ssrc: u32, seq0: u16, n: usize) {
        self.send_stream_with(to, ssrc, seq0, n, 0xd5);
    }

    /// As [`RtpEndpoint::send_stream`], every payload byte `byte`.
    pub fn send_stream_with(
        &self,
        to: std::net::SocketAddr,
        ssrc: u32,
        seq0: u16,
        n: usize,
        byte: u8,
    ) {
        for i in 0..n {
            let seq = seq0.wrapping_add(i as u16);
            self.send_rtp_with(to, ssrc, seq, 1000u32.wrapping_add(160 * i as u32), byte);
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

impl Drop for RtpEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Checks that `pkts` are one rewritten RTP stream: one source, one SSRC, sequence numbers
/// rising by exactly one. Returns the source and the SSRC.
pub fn assert_one_stream(what: &str, pkts: &[RtpSeen]) -> (std::net::SocketAddr, u32) {
    let first = pkts.first().unwrap_or_else(|| panic!("{what}: no packets"));
    for w in pkts.windows(2) {
        assert_eq!(w[1].from, first.from, "{what}: a second source {:?}", w[1]);
        assert_eq!(w[1].ssrc, first.ssrc, "{what}: SSRC changed: {:?}", w[1]);
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "{what}: sequence gap/reorder: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    (first.from, first.ssrc)
}
