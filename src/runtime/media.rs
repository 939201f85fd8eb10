//! Runs one call's media relay on real sockets: the tokio side of [`crate::media::relay`].
//!
//! Does: wait for the relay's sockets to become readable, pull datagrams in batches
//! (`recvmmsg`), hand each to the sans-IO [`Relay`] with `Instant::now()`, and send what it
//! forwards in batches (`sendmmsg`) from the socket it names; apply control messages (a far
//! side switched, re-latch after a re-INVITE, stop). Never: looks inside packets or decides
//! anything — that is the relay core's job. Not yet wired into calls (issue 3).
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batch_udp::{recv_batch, send_batch, RecvBatch, BATCH};
use crate::media::relay::{Action, Relay, Side, SocketKind};

/// The RTP sockets of a relay: one per leg (RTCP is muxed on them in this first driver).
pub struct RelaySockets {
    pub a: UdpSocket,
    pub b: UdpSocket,
}

/// What the call tells a running relay.
#[derive(Debug)]
pub enum Control {
    /// The far side of `Side` changed (a new AI provider): keep the stream continuous.
    SourceSwitch(Side),
    /// The peer of `Side` moved (re-INVITE): learn its address again.
    Relatch(Side, Option<SocketAddr>),
    /// Hand the relay back (for its statistics) and stop.
    Stop(oneshot::Sender<Relay>),
}

/// A running relay.
pub struct RelayHandle {
    pub control: mpsc::Sender<Control>,
    pub task: JoinHandle<io::Result<()>>,
}

/// Starts driving `relay` on `sockets`.
pub fn spawn_relay(relay: Relay, sockets: RelaySockets) -> RelayHandle {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(drive(relay, sockets, rx));
    RelayHandle { control: tx, task }
}

async fn drive(
    mut relay: Relay,
    sockets: RelaySockets,
    mut control: mpsc::Receiver<Control>,
) -> io::Result<()> {
    let mut batch = RecvBatch::default();
    // Reused for every batch: (index in batch, destination, length, send from leg).
    let mut out: Vec<(usize, SocketAddr, usize, Side)> = Vec::with_capacity(BATCH);
    loop {
        let side = tokio::select! {
            r = sockets.a.readable() => { r?; Side::A }
            r = sockets.b.readable() => { r?; Side::B }
            msg = control.recv() => {
                match msg {
                    Some(Control::SourceSwitch(s)) => relay.handle_source_switch(s, Instant::now()),
                    Some(Control::Relatch(s, rtp)) => relay.relatch(s, rtp, None),
                    Some(Control::Stop(back)) => {
                        let _ = back.send(relay);
                        return Ok(());
                    }
                    None => return Ok(()),
                }
                continue;
            }
        };
        let sock = match side {
            Side::A => &sockets.a,
            Side::B => &sockets.b,
        };
        let n = match sock.try_io(Interest::READABLE, || {
            recv_batch(sock.as_raw_fd(), &mut batch)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            // ICMP errors from a previous send surface here; they are not fatal.
            Err(_) => continue,
        };
        let now = Instant::now();
        out.clear();
        for i in 0..n {
            let Some((buf, from)) = batch.get_mut(i) else {
                continue;
            };
            if let Action::Forward { to, len, via } = relay.handle_rtp(side, from, buf, now) {
                if via.kind == SocketKind::Rtp {
                    out.push((i, to, len, via.side));
                }
            }
        }
        for leg in [Side::A, Side::B] {
            let sock = match leg {
                Side::A => &sockets.a,
                Side::B => &sockets.b,
            };
            let packets: Vec<(SocketAddr, &[u8])> = out
                .iter()
                .filter(|(_, _, _, s)| *s == leg)
                .filter_map(|&(i, to, len, _)| batch.datagram(i, len).map(|d| (to, d)))
                .collect();
            let mut sent = 0;
            while sent < packets.len() {
                match sock.try_io(Interest::WRITABLE, || {
                    send_batch(sock.as_raw_fd(), &packets[sent..])
                }) {
                    Ok(k) => sent += k.max(1),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        sock.writable().await?;
                    }
                    // A peer that went away (ICMP): drop the rest of this batch to it.
                    Err(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::relay::{LegConfig, RelayConfig, StreamConfig};
    use std::time::Duration;

    fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0u8; 172];
        p[0] = 0x80;
        p[1] = 0; // PCMU
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    fn header(p: &[u8]) -> (bool, u16, u32, u32) {
        (
            p[1] & 0x80 != 0,
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        )
    }

    /// Over real sockets: the AI side is replaced mid-stream (new address, new SSRC, its own
    /// sequence and timestamps); the carrier keeps receiving one stream — same SSRC,
    /// sequence +1, timestamp advanced by the gap, marker on the first packet after.
    // Multi-threaded: the test blocks on std sockets while the relay task runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn far_side_switch_is_one_continuous_stream_on_the_wire() {
        let lo = "127.0.0.1:0";
        let (ra, rb) = (
            UdpSocket::bind(lo).await.unwrap(),
            UdpSocket::bind(lo).await.unwrap(),
        );
        let carrier = std::net::UdpSocket::bind(lo).unwrap();
        let ai1 = std::net::UdpSocket::bind(lo).unwrap();
        let ai2 = std::net::UdpSocket::bind(lo).unwrap();
        carrier
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (ra_addr, rb_addr) = (ra.local_addr().unwrap(), rb.local_addr().unwrap());
        let now = Instant::now();
        let relay = Relay::new(
            RelayConfig {
                a: LegConfig::new(Some(carrier.local_addr().unwrap()), Duration::from_secs(30)),
                b: LegConfig::new(Some(ai1.local_addr().unwrap()), Duration::from_secs(1)),
                a_to_b: StreamConfig::from_seed(1, 8000),
                b_to_a: StreamConfig::from_seed(2, 8000),
            },
            now,
        );
        let h = spawn_relay(relay, RelaySockets { a: ra, b: rb });

        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for i in 0..5u16 {
            ai1.send_to(&rtp(1000 + i, 50_000 + 160 * i as u32, 0xAAAA), rb_addr)
                .unwrap();
            let n = carrier.recv(&mut buf).expect("relayed to the carrier");
            got.push(header(&buf[..n]));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Provider 1 dies; provider 2 takes over from a new address after a 200 ms gap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.control
            .send(Control::Relatch(Side::B, Some(ai2.local_addr().unwrap())))
            .await
            .unwrap();
        h.control
            .send(Control::SourceSwitch(Side::B))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        for i in 0..5u16 {
            ai2.send_to(&rtp(7 + i, 9 + 160 * i as u32, 0xBBBB), rb_addr)
                .unwrap();
            let n = carrier.recv(&mut buf).expect("relayed after the switch");
            got.push(header(&buf[..n]));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A stray packet from the old provider's address is now dropped (strict source).
        ai1.send_to(&rtp(2000, 0, 0xAAAA), rb_addr).unwrap();
        assert!(
            carrier.recv(&mut buf).is_err(),
            "old provider's packet must not pass"
        );

        let ssrc = got[0].3;
        assert!(
            got.iter().all(|g| g.3 == ssrc),
            "one SSRC for the whole call: {got:?}"
        );
        for w in got.windows(2) {
            assert_eq!(
                w[1].1,
                w[0].1.wrapping_add(1),
                "sequence continuous: {got:?}"
            );
        }
        let markers: Vec<usize> = got
            .iter()
            .enumerate()
            .filter(|(_, g)| g.0)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            markers,
            vec![5],
            "marker only on the first packet after the switch"
        );
        let jump = got[5].2.wrapping_sub(got[4].2);
        // ≥ 220 ms of wall clock at 8 kHz (1760 ticks); bounded by a generous 2 s so a loaded
        // machine cannot make it flaky, while a reset or random jump would still fail.
        assert!(
            (1700..16_000).contains(&jump),
            "timestamp advanced by the gap: {jump}"
        );
        assert_eq!(
            got[6].2.wrapping_sub(got[5].2),
            160,
            "then by the source's own steps"
        );

        let (tx, rx) = oneshot::channel();
        h.control.send(Control::Stop(tx)).await.unwrap();
        let relay = rx.await.unwrap();
        assert_eq!(relay.stats(Side::B).drops.wrong_source, 1);
        let _ = ra_addr;
    }
}
