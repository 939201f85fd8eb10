//! Child processes of the drill (holdfast itself and every peer endpoint) and free loopback
//! ports. Every child is owned by a [`Child`] guard that SIGKILLs (by PID) and reaps it when
//! dropped, so no exit path of the drill (error, panic, Ctrl-C) leaves a process behind.
//! Peers additionally exit on their own when their stdin closes, which covers the drill itself
//! being SIGKILLed; holdfast gets `PR_SET_PDEATHSIG` on Linux for the same reason.
//!
//! This is the drill's process shell: it spawns, signals and binds; nothing here is sans-IO.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

/// A child process, SIGKILLed and reaped on drop.
pub struct Child {
    pub name: String,
    child: std::process::Child,
    /// Held open: a peer exits when it sees EOF here.
    _stdin: Option<ChildStdin>,
    reaped: bool,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL by PID (no chance to say goodbye: sockets close, the kernel answers ICMP port
    /// unreachable / TCP RST from then on), then reap.
    pub fn kill(&mut self) -> Result<()> {
        if self.reaped {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on the PID of a child we have not reaped yet, so the PID cannot
        // have been recycled for another process.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e).with_context(|| format!("SIGKILL {} (pid {pid})", self.name));
            }
        }
        self.child.wait().context("reap")?;
        self.reaped = true;
        Ok(())
    }

    /// `Some(status)` once the child has exited on its own.
    pub fn try_exited(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.reaped = true;
                Some(s)
            }
            _ => None,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Spawns `holdfast peer <role> --index <i>` and reads its `READY <addr>` line.
pub fn spawn_peer(
    exe: &Path,
    name: &str,
    role: &str,
    index: u8,
    log: &Path,
) -> Result<(Child, SocketAddr)> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut child = Command::new(exe)
        .args(["peer", role, "--index", &index.to_string(), "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .with_context(|| format!("spawn peer {name}"))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let mut guard = Child {
        name: name.to_string(),
        child,
        _stdin: stdin,
        reaped: false,
    };
    let stdout = stdout.ok_or_else(|| anyhow!("no stdout from peer {name}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("peer {name} did not report its address"))?;
    let addr = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            let _ = guard.kill();
            anyhow!("peer {name} said {line:?} instead of READY <addr>")
        })?;
    Ok((guard, addr))
}

/// Spawns holdfast on `config` with JSON logs into `log`, and waits until it is up.
pub fn spawn_holdfast(
    exe: &Path,
    config: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> Result<Child> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "--log-format",
        "json",
        "--log-level",
        "info",
        "run",
        "--config",
    ])
    .arg(config)
    .envs(env.iter().copied())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::from(log_file));
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let child = cmd.spawn().context("spawn holdfast")?;
    let mut guard = Child {
        name: "holdfast".into(),
        child,
        _stdin: None,
        reaped: false,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("\"holdfast is up\"") {
            return Ok(guard);
        }
        if let Some(status) = guard.try_exited() {
            bail!("holdfast exited ({status}) at start:\n{}", tail(&text, 20));
        }
        if Instant::now() > deadline {
            bail!("holdfast did not come up within 20 s:\n{}", tail(&text, 20));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A loopback port free for UDP and TCP right now (bind port 0, then release it).
pub fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}

/// A free window of `len` relay ports (even start) in 20000-29999, below the kernel's
/// ephemeral range, probed by binding each port for a moment.
pub fn free_port_window(len: u16, seed: u64) -> Result<(u16, u16)> {
    let mut x = seed | 1;
    for _ in 0..200 {
        // xorshift: a different window per attempt and per drill.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let lo = 20000 + (x % u64::from(10000 - len)) as u16;
        let lo = lo - lo % 2;
        let hi = lo + len - 1;
        let free = (lo..=hi)
            .map(|p| UdpSocket::bind(("127.0.0.1", p)))
            .collect::<Result<Vec<_>, _>>()
            .is_ok();
        if free {
            return Ok((lo, hi));
        }
    }
    bail!("no free window of {len} UDP ports in 20000-29999")
}
