//! The process's file-descriptor limit (RLIMIT_NOFILE) and the call capacity it leaves.
//!
//! Does: raise the soft limit to the hard one at start ([`raise_nofile`], before anything is
//! bound: the common default soft limit of 1024 holds about 240 calls); count the
//! descriptors open ([`open_descriptors`], `/proc/self/fd`); say how many concurrent calls
//! the port range and the limit allow and which bounds them ([`capacity_report`] for
//! `holdfast check`, [`log_capacity`] for the start-up log).
//!
//! Never: lowers a limit or touches the hard limit (raising it is the operator's: systemd
//! `LimitNOFILE=`, `ulimit -Hn`, `/etc/security/limits.conf`), or refuses to start over it.
use std::io;

use tracing::{info, warn};

use crate::config::Config;
use crate::media::ports::{
    CallCapacity, CapacityBound, DESCRIPTORS_PER_CALL, WS_LEG_EXTRA_DESCRIPTORS,
};

/// Where the limit is set, for log lines and `holdfast check`.
pub const HOW_TO_RAISE: &str = "LimitNOFILE= in the systemd unit, `ulimit -n` (as root: \
    `ulimit -Hn`) in the shell that starts holdfast, or a `nofile` line in \
    /etc/security/limits.conf";

/// Descriptors holdfast has open before its first call besides its listeners (stdio, the
/// tokio runtime, the admin API, the record writer), for `holdfast check`, which runs
/// nothing. The running process counts its own (`open_descriptors`).
const STARTUP_BASE: u64 = 24;
/// Descriptors per media worker at start (epoll, eventfd, and with `io: raw` the raw
/// socket and its filter map).
const STARTUP_PER_WORKER: u64 = 4;

/// RLIMIT_NOFILE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// What [`raise_nofile`] did.
#[derive(Debug)]
pub enum Raise {
    /// The soft limit already was the hard one (or all the kernel allows).
    Unchanged(NofileLimit),
    /// Raised from `from` to `now.soft`.
    Raised { from: u64, now: NofileLimit },
    /// The soft limit could not be raised (it stays at `limit.soft`).
    Failed {
        limit: NofileLimit,
        error: io::Error,
    },
}

/// The current RLIMIT_NOFILE (`u64::MAX` for unlimited).
pub fn nofile() -> io::Result<NofileLimit> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a plain struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit {
        soft: l.rlim_cur,
        hard: l.rlim_max,
    })
}

/// The most descriptors a process may have on this kernel (`fs.nr_open`): the soft limit
/// cannot go above it even when the hard limit is unlimited.
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (capped by `fs.nr_open`).
pub fn raise_nofile() -> io::Result<Raise> {
    let before = nofile()?;
    let target = match nr_open() {
        Some(n) => before.hard.min(n),
        None => before.hard,
    };
    if before.soft >= target {
        return Ok(Raise::Unchanged(before));
    }
    let l = libc::rlimit {
        rlim_cur: target,
        rlim_max: before.hard,
    };
    // SAFETY: setrlimit reads a plain struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
        return Ok(Raise::Failed {
            limit: before,
            error: io::Error::last_os_error(),
        });
    }
    Ok(Raise::Raised {
        from: before.soft,
        now: nofile()?,
    })
}

/// Logs what [`raise_nofile`] did: the new limit, or a warning saying how to fix it.
pub fn log_raise(r: &io::Result<Raise>) {
    match r {
        Ok(Raise::Raised { from, now }) => info!(
            from, soft = now.soft, hard = now.hard,
            "descriptor limit (RLIMIT_NOFILE) raised from {from} to {}", now.soft
        ),
        Ok(Raise::Unchanged(l)) => info!(
            soft = l.soft, hard = l.hard,
            "descriptor limit (RLIMIT_NOFILE) {} (the hard limit)", l.soft
        ),
        Ok(Raise::Failed { limit, error }) => warn!(
            soft = limit.soft, hard = limit.hard,
            "descriptor limit (RLIMIT_NOFILE) stays at {} (hard {}): could not raise it: {error}; set it with {HOW_TO_RAISE}",
            limit.soft, limit.hard
        ),
        Err(e) => warn!("descriptor limit (RLIMIT_NOFILE) unknown: {e}"),
    }
}

/// Descriptors this process has open now (entries of `/proc/self/fd`, less the one the
/// listing itself uses).
pub fn open_descriptors() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// The start-up line: how many concurrent calls the port range and the descriptor limit
/// allow, which one bounds them, and (a warning) how to lift a descriptor bound.
pub fn log_capacity(config: &Config) {
    let (Ok(limit), Some(open)) = (nofile(), open_descriptors()) else {
        return;
    };
    let cap = CallCapacity::new(&config.media.ports, limit.soft, open);
    let fields = |cap: &CallCapacity| {
        (
            cap.calls(),
            cap.port_range_calls,
            cap.descriptor_calls,
            cap.bound().as_str(),
        )
    };
    let (calls, port_range_calls, descriptor_calls, bound_by) = fields(&cap);
    match cap.bound() {
        CapacityBound::PortRange => info!(
            calls, bound_by, port_range_calls, descriptor_calls, nofile = limit.soft,
            nofile_hard = limit.hard, descriptors_open = open, descriptors_per_call = DESCRIPTORS_PER_CALL,
            "call capacity: {calls} concurrent calls, bound by media.ports ({port_range_calls} calls of 4 ports); \
             the descriptor limit {} allows {descriptor_calls} ({DESCRIPTORS_PER_CALL} descriptors each)",
            limit.soft
        ),
        CapacityBound::Descriptors => warn!(
            calls, bound_by, port_range_calls, descriptor_calls, nofile = limit.soft,
            nofile_hard = limit.hard, descriptors_open = open, descriptors_per_call = DESCRIPTORS_PER_CALL,
            "call capacity: {calls} concurrent calls, bound by the descriptor limit {} \
             ({DESCRIPTORS_PER_CALL} descriptors each, {open} open now); media.ports allows \
             {port_range_calls}: raise the hard limit to at least {} ({HOW_TO_RAISE})",
            limit.soft,
            cap.nofile_for_port_range()
        ),
    }
}

/// `holdfast check`'s capacity section, from this shell's RLIMIT_NOFILE (holdfast raises
/// the soft limit to the hard one at start, so the hard limit is what it will have).
pub fn capacity_report(config: &Config) -> String {
    let m = &config.media;
    let workers = m.threads as u64;
    let listeners = config.sip.listen.len() as u64 + u64::from(config.admin.listen.is_some());
    let open = STARTUP_BASE + listeners + STARTUP_PER_WORKER * workers;
    let range = format!("{}-{}", m.ports.start(), m.ports.end());
    let mut out = String::from("\ncall capacity:\n");
    let by_ports = CallCapacity::new(&m.ports, u64::MAX, 0).port_range_calls;
    out.push_str(&format!(
        "  media.ports {range}: {by_ports} calls (4 ports each: RTP and RTCP per leg)\n"
    ));
    let Ok(limit) = nofile() else {
        out.push_str("  descriptor limit: unknown (getrlimit failed)\n");
        return out;
    };
    let effective = nr_open().map_or(limit.hard, |n| limit.hard.min(n));
    let cap = CallCapacity::new(&m.ports, effective, open);
    let shown = |v: u64| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    let raised = if limit.soft < effective {
        format!(
            " (this shell's soft limit {} is raised to it at start)",
            shown(limit.soft)
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  descriptor limit {}{raised}: {} calls ({DESCRIPTORS_PER_CALL} descriptors each, \
         {WS_LEG_EXTRA_DESCRIPTORS} more with a WebSocket AI leg; about {} kept for \
         listeners, workers, SIP/TCP connections and headroom)\n",
        shown(effective),
        cap.descriptor_calls,
        cap.reserved
    ));
    match cap.bound() {
        CapacityBound::PortRange => out.push_str(&format!(
            "  capacity: {} concurrent calls, bound by media.ports\n",
            cap.calls()
        )),
        CapacityBound::Descriptors => out.push_str(&format!(
            "  capacity: {} concurrent calls, bound by the descriptor limit; for all of \
             media.ports raise the hard limit to at least {} ({HOW_TO_RAISE})\n",
            cap.calls(),
            cap.nofile_for_port_range()
        )),
    }
    out
}
