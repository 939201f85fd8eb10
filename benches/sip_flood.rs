//! SIP flood harness helpers, driven by `benches/sip_flood.sh` (a `harness = false` bench
//! binary; with no subcommand, as under `cargo test --benches` or `cargo bench`, it prints
//! usage and exits 0).
//!
//! - `flood`: a paced INVITE flood from several loopback source addresses (one socket per
//!   address), `sendmmsg` in batches. Every INVITE is new (its own Call-ID, branch and From
//!   tag, patched into a pre-built datagram), as a scanner's or a spoofer's would be. Prints
//!   what it sent as `key=value` tokens.
//! - `media`: the RTP side of the calls the script sets up with SIPp: binds one socket per
//!   call (writing SIPp's `-inf` file with their ports), waits until SIPp's scenario log says
//!   which holdfast (or rtpengine) port each call's answer carries, then sends 50 packets per
//!   second on every call and receives them back (the agent SIPp echoes them). Each packet
//!   carries its send time; the kernel stamps its echo's arrival (SO_TIMESTAMPNS), so a
//!   pause of this process shows as its own late sending, never as a gap in the relay.
//!   Reports what came back, the round trips and the longest silence, as `key=value`.
//!
//! Loopback only (addresses outside 127.0.0.0/8 are refused), bounded: `--secs` <= 120 for
//! both, the wait for the calls' ports <= 60 s.
use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const USAGE: &str = "\
sip_flood: helpers for benches/sip_flood.sh (loopback only)

usage:
  sip_flood flood --to 127.0.0.1:PORT --sources LIST --rate PPS --secs D [--ruri USER]
      LIST: comma-separated IPv4 addresses or ranges (127.0.1.1-20). Sends new INVITEs
      (with SDP) round-robin from one socket per source, paced to PPS in total for D
      seconds; prints \"sent= bytes= secs= rate= errors= size=\".
  sip_flood media --csv FILE --base PORT --calls N --map LOG --secs D [--warmup 1]
      binds N sockets (PORT, PORT+2, ...), writes FILE (SIPp -inf: SEQUENTIAL, one port per
      line), waits for N \"MAP <our port> <their port>\" lines in LOG, prints \"streaming\",
      then sends 50 pps per call for D seconds and counts the echoes; prints
      \"calls= sent= received= lost= calls_lossy= max_gap_ms= p99_gap_ms= calls_gap_over_100ms=
      max_gap_at_s= max_send_gap_ms=\" (gaps measured after the first --warmup seconds;
      max_send_gap_ms is this process's own longest pause between two sending rounds).
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().filter(|a| !a.starts_with('-')) else {
        print!("{USAGE}");
        return;
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "flood" => flood(rest),
        "media" => media(rest),
        "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown subcommand {other:?}\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("sip_flood {cmd}: {e}");
        std::process::exit(1);
    }
}

/// `--key value` options.
fn opt<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
    args.chunks(2)
        .find(|c| c[0] == key)
        .and_then(|c| c.get(1))
        .map(String::as_str)
}

fn req<'a>(args: &'a [String], key: &str) -> Result<&'a str, String> {
    opt(args, key).ok_or_else(|| format!("missing {key}"))
}

fn num<T: std::str::FromStr>(args: &[String], key: &str, default: Option<T>) -> Result<T, String> {
    match opt(args, key) {
        Some(v) => v.parse().map_err(|_| format!("bad {key} {v:?}")),
        None => default.ok_or_else(|| format!("missing {key}")),
    }
}

fn loopback(a: IpAddr) -> Result<IpAddr, String> {
    if a.is_loopback() && a.is_ipv4() {
        Ok(a)
    } else {
        Err(format!("{a}: loopback (127.0.0.0/8) only"))
    }
}

/// `127.0.1.1-20,127.0.2.5` → the addresses.
fn sources(list: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => {
                let a: Ipv4Addr = a.parse().map_err(|_| format!("bad address {a:?}"))?;
                let n: u8 = b.parse().map_err(|_| format!("bad range end {b:?}"))?;
                let o = a.octets();
                (a, Ipv4Addr::new(o[0], o[1], o[2], n))
            }
            None => {
                let a: Ipv4Addr = item.parse().map_err(|_| format!("bad address {item:?}"))?;
                (a, a)
            }
        };
        let (lo, hi) = (u32::from(first), u32::from(last));
        if hi < lo || hi - lo > 255 {
            return Err(format!("bad range {item:?}"));
        }
        for v in lo..=hi {
            let ip = Ipv4Addr::from(v);
            loopback(IpAddr::V4(ip))?;
            out.push(ip);
        }
    }
    if out.is_empty() {
        return Err("no sources".into());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// flood

/// Width of the per-INVITE counter patched into Call-ID, branch and From tag.
const SEQ_DIGITS: usize = 10;
const BATCH: usize = 32;

/// A pre-built INVITE from one source with the offsets of its counter fields.
struct Template {
    bytes: Vec<u8>,
    slots: Vec<usize>,
}

impl Template {
    fn new(from: SocketAddr, to: SocketAddr, ruri_user: &str) -> Template {
        let seq = "0".repeat(SEQ_DIGITS);
        let sdp = format!(
            "v=0\r\no=flood 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
            ip = from.ip()
        );
        let text = format!(
            "INVITE sip:{ruri_user}@{to} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {from};branch=z9hG4bKfl{seq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Flood\" <sip:+15550009999@{from}>;tag=f{seq}\r\n\
             To: <sip:{ruri_user}@{to}>\r\n\
             Call-ID: {seq}@{ip}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:flood@{from}>\r\n\
             User-Agent: flood-bench\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{sdp}",
            ip = from.ip(),
            len = sdp.len()
        );
        let bytes = text.into_bytes();
        let mut slots = Vec::new();
        let mut at = 0;
        while let Some(i) = find(&bytes[at..], seq.as_bytes()) {
            slots.push(at + i);
            at += i + SEQ_DIGITS;
        }
        assert_eq!(slots.len(), 3, "three counter slots");
        Template { bytes, slots }
    }

    fn write(&self, buf: &mut Vec<u8>, n: u64) {
        buf.clear();
        buf.extend_from_slice(&self.bytes);
        let digits = format!(
            "{:0width$}",
            n % 10u64.pow(SEQ_DIGITS as u32),
            width = SEQ_DIGITS
        );
        for &s in &self.slots {
            buf[s..s + SEQ_DIGITS].copy_from_slice(digits.as_bytes());
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `bufs` to `to` from `sock` with one sendmmsg; returns how many went out.
fn send_batch(sock: &UdpSocket, to: SocketAddr, bufs: &[Vec<u8>]) -> usize {
    let SocketAddr::V4(v4) = to else { return 0 };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_name = &addr as *const libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = v as *mut libc::iovec;
            h.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            }
        })
        .collect();
    // SAFETY: msgs points at len() initialised headers whose buffers live in `bufs`.
    let n = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    n.max(0) as usize
}

fn flood(args: &[String]) -> Result<(), String> {
    let to: SocketAddr = req(args, "--to")?
        .parse()
        .map_err(|_| "bad --to (want 127.x.y.z:port)".to_string())?;
    loopback(to.ip())?;
    let srcs = sources(req(args, "--sources")?)?;
    let rate: f64 = num(args, "--rate", None)?;
    let secs: f64 = num(args, "--secs", None)?;
    if !(1.0..=2_000_000.0).contains(&rate) || !(0.1..=120.0).contains(&secs) {
        return Err("--rate 1..=2000000, --secs 0.1..=120".into());
    }
    let ruri = opt(args, "--ruri").unwrap_or("+15551230000");
    let mut socks = Vec::new();
    for ip in &srcs {
        let s = UdpSocket::bind((*ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
        let from = s.local_addr().map_err(|e| e.to_string())?;
        socks.push((s, Template::new(from, to, ruri)));
    }
    let size = socks[0].1.bytes.len();
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(size + 16)).collect();
    let total = (rate * secs).round() as u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs) + Duration::from_secs(2);
    let (mut sent, mut bytes, mut errors, mut seq) = (0u64, 0u64, 0u64, 0u64);
    let mut next_src = 0usize;
    while sent < total && Instant::now() < deadline {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            let (sock, tpl) = &socks[next_src];
            next_src = (next_src + 1) % socks.len();
            let n = (due - sent).min(BATCH as u64) as usize;
            for b in bufs.iter_mut().take(n) {
                seq += 1;
                tpl.write(b, seq);
            }
            let out = send_batch(sock, to, &bufs[..n]);
            errors += (n - out) as u64;
            bytes += bufs[..out].iter().map(|b| b.len() as u64).sum::<u64>();
            sent += n as u64;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "sent={} bytes={bytes} secs={el:.2} rate={:.0} errors={errors} size={size} sources={}",
        sent - errors,
        (sent - errors) as f64 / el,
        socks.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// media

const PTIME: Duration = Duration::from_millis(20);

struct Call {
    sock: UdpSocket,
    peer: Option<SocketAddr>,
    ssrc: u32,
    sent: u64,
    received: u64,
    /// Kernel receive time of the last echo (ns, CLOCK_REALTIME).
    last_rx: Option<i64>,
    max_gap_ns: i64,
    /// Round trips (send → proxy → agent's echo → proxy → here), ns.
    rtts: Vec<i64>,
}

/// Now on CLOCK_REALTIME in ns: the clock of the kernel's SO_TIMESTAMPNS receive stamps.
fn realtime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into a live local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Asks the kernel to stamp every datagram with its arrival time, and for a receive buffer
/// that holds several seconds of one call (so a pause of this process loses nothing and
/// the stamps still say when each packet really arrived).
fn prepare_media_socket(sock: &UdpSocket) {
    let fd = sock.as_raw_fd();
    let one: libc::c_int = 1;
    let size: libc::c_int = 1 << 20;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: live socket, c_int option values of the stated length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const libc::c_int).cast(),
            len,
        );
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            len,
        ) != 0
        {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                len,
            );
        }
    }
}

/// One datagram and its kernel arrival stamp (ns, CLOCK_REALTIME), if any is waiting.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, i64)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: an all-zero msghdr is valid; every pointer set below is a live local.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    h.msg_control = control.as_mut_ptr().cast();
    h.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg into the buffers described by `h`.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut h, libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    let mut stamp = realtime_ns();
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                stamp = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
            }
            c = libc::CMSG_NXTHDR(&h, c);
        }
    }
    Some((n as usize, stamp))
}

fn media(args: &[String]) -> Result<(), String> {
    let csv = req(args, "--csv")?;
    let base: u16 = num(args, "--base", None)?;
    let calls: usize = num(args, "--calls", None)?;
    let map = req(args, "--map")?;
    let secs: f64 = num(args, "--secs", None)?;
    let warmup: f64 = num(args, "--warmup", Some(1.0))?;
    if !(0.5..=120.0).contains(&secs) || calls == 0 || calls > 2000 {
        return Err("--secs 0.5..=120, --calls 1..=2000".into());
    }
    let mut by_port: HashMap<u16, usize> = HashMap::new();
    let mut list = Vec::with_capacity(calls);
    for i in 0..calls {
        let port = base + 2 * i as u16;
        let sock = UdpSocket::bind(("127.0.0.1", port)).map_err(|e| format!("bind {port}: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        prepare_media_socket(&sock);
        by_port.insert(port, i);
        list.push(Call {
            sock,
            peer: None,
            ssrc: 0x5150_0000 + i as u32,
            sent: 0,
            received: 0,
            last_rx: None,
            max_gap_ns: 0,
            rtts: Vec::new(),
        });
    }
    let mut f = std::fs::File::create(format!("{csv}.tmp")).map_err(|e| e.to_string())?;
    writeln!(f, "SEQUENTIAL").map_err(|e| e.to_string())?;
    for i in 0..calls {
        writeln!(f, "{}", base + 2 * i as u16).map_err(|e| e.to_string())?;
    }
    drop(f);
    std::fs::rename(format!("{csv}.tmp"), csv).map_err(|e| e.to_string())?;

    // Wait for "MAP <our port> <their port>" per call in SIPp's scenario log.
    let wait_until = Instant::now() + Duration::from_secs(60);
    let mut mapped = 0;
    while mapped < calls {
        if Instant::now() > wait_until {
            return Err(format!("only {mapped} of {calls} calls answered in 60 s"));
        }
        let text = std::fs::read_to_string(map).unwrap_or_default();
        for line in text.lines() {
            let mut w = line.split_whitespace().skip_while(|t| *t != "MAP").skip(1);
            let (Some(ours), Some(theirs)) = (w.next(), w.next()) else {
                continue;
            };
            let (Ok(ours), Ok(theirs)) = (ours.parse::<u16>(), theirs.parse::<u16>()) else {
                continue;
            };
            if let Some(&i) = by_port.get(&ours) {
                if list[i].peer.is_none() {
                    list[i].peer = Some(SocketAddr::from(([127, 0, 0, 1], theirs)));
                }
            }
        }
        mapped = list.iter().filter(|c| c.peer.is_some()).count();
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("streaming calls={calls}");
    let _ = std::io::stdout().flush();

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let rt0 = realtime_ns();
    let (warm_ns, end_ns) = (rt0 + (warmup * 1e9) as i64, rt0 + (secs * 1e9) as i64);
    let mut pkt = vec![0u8; 12 + 160];
    pkt[0] = 0x80;
    pkt[1] = 8; // PCMA
    pkt[12..].fill(0xd5);
    let mut buf = [0u8; 2048];
    let mut tick = 0u64;
    // This process's own lateness: the longest time between two sending rounds.
    let mut last_round: Option<Instant> = None;
    let mut max_send_gap = Duration::ZERO;
    let mut worst_gap = (0i64, 0i64); // (gap, when: ns since the start)
                                      // Packets still in flight get 500 ms to come back after the last one is sent.
    while Instant::now() < end + Duration::from_millis(500) {
        let now = Instant::now();
        if now < end && now >= start + PTIME * tick as u32 {
            if let Some(l) = last_round.filter(|_| now >= start + Duration::from_secs_f64(warmup)) {
                max_send_gap = max_send_gap.max(now - l);
            }
            last_round = Some(now);
            for c in list.iter_mut() {
                let seq = (tick as u16).wrapping_add(1);
                pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                pkt[4..8].copy_from_slice(&((tick as u32).wrapping_mul(160)).to_be_bytes());
                pkt[8..12].copy_from_slice(&c.ssrc.to_be_bytes());
                // The send time rides in the payload; the echo brings it back.
                pkt[12..20].copy_from_slice(&realtime_ns().to_be_bytes());
                if let Some(p) = c.peer {
                    if c.sock.send_to(&pkt, p).is_ok() {
                        c.sent += 1;
                    }
                }
            }
            tick += 1;
        }
        for c in list.iter_mut() {
            while let Some((n, at)) = recv_stamped(&c.sock, &mut buf) {
                if n < 20 || buf[0] >> 6 != 2 {
                    continue;
                }
                c.received += 1;
                let mut sent_at = [0u8; 8];
                sent_at.copy_from_slice(&buf[12..20]);
                let sent_at = i64::from_be_bytes(sent_at);
                if (warm_ns..=end_ns).contains(&at) {
                    c.rtts.push(at - sent_at);
                    if let Some(last) = c.last_rx {
                        let gap = at - last;
                        c.max_gap_ns = c.max_gap_ns.max(gap);
                        if gap > worst_gap.0 {
                            worst_gap = (gap, at - rt0);
                        }
                    }
                }
                c.last_rx = Some(at);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ms = |ns: i64| ns as f64 / 1e6;
    let sent: u64 = list.iter().map(|c| c.sent).sum();
    let received: u64 = list.iter().map(|c| c.received).sum();
    let lossy = list.iter().filter(|c| c.received < c.sent).count();
    let max_gap = list.iter().map(|c| c.max_gap_ns).max().unwrap_or(0);
    let mut all: Vec<i64> = list.iter().flat_map(|c| c.rtts.iter().copied()).collect();
    all.sort_unstable();
    let pct = |p: usize| {
        all.get(all.len().saturating_sub(1) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    let late = list
        .iter()
        .filter(|c| c.rtts.iter().any(|r| *r > 100_000_000))
        .count();
    println!(
        "calls={calls} sent={sent} received={received} lost={} calls_lossy={lossy} rtt_p50_ms={:.2} rtt_p99_ms={:.2} rtt_max_ms={:.1} calls_rtt_over_100ms={late} max_gap_ms={:.1} max_gap_at_s={:.1} max_send_gap_ms={:.1}",
        sent.saturating_sub(received),
        ms(pct(50)),
        ms(pct(99)),
        ms(all.last().copied().unwrap_or(0)),
        ms(max_gap),
        worst_gap.1 as f64 / 1e9,
        max_send_gap.as_secs_f64() * 1000.0
    );
    Ok(())
}
