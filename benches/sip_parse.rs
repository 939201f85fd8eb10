//! Parse cost of a typical carrier INVITE with SDP and a 200 OK answer, plus the full
//! `classify` path (parse + every check) and serialization.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use holdfast::sip::{classify, parse, Policy};

#[path = "common/messages.rs"]
mod messages;
use messages::INVITE;

const OK200: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKhf1a2b3c4d;rport=5060;received=203.0.113.5\r\n\
Record-Route: <sip:agent-lb.example.org;lr>\r\n\
From: <sip:+15557654321@holdfast.example.com>;tag=hf-8c1d2e3f\r\n\
To: <sip:+15551234567@agent.example.org>;tag=ag-77aa88bb\r\n\
Call-ID: hf-0123456789abcdef@203.0.113.5\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:agent@192.0.2.50:5060;transport=udp>\r\n\
Supported: timer\r\n\
Require: timer\r\n\
Session-Expires: 1800;refresher=uas\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 133\r\n\
\r\n\
v=0\r\n\
o=- 1 1 IN IP4 192.0.2.50\r\n\
s=-\r\n\
c=IN IP4 192.0.2.50\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";

fn bench(c: &mut Criterion) {
    assert!(parse(INVITE).is_ok());
    assert!(parse(OK200).is_ok());
    c.bench_function("parse INVITE with SDP", |b| {
        b.iter(|| parse(black_box(INVITE)).map(|m| m.headers().len()))
    });
    c.bench_function("parse 200 OK with SDP", |b| {
        b.iter(|| parse(black_box(OK200)).map(|m| m.headers().len()))
    });
    let policy = Policy::default();
    c.bench_function("classify INVITE (parse + all checks)", |b| {
        b.iter(|| {
            matches!(
                classify(black_box(INVITE), &policy),
                holdfast::sip::Verdict::Handle(_)
            )
        })
    });
    let m = parse(INVITE).unwrap();
    c.bench_function("serialize INVITE", |b| b.iter(|| black_box(&m).to_bytes()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
