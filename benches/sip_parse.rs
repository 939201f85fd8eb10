//! Parse cost of a typical carrier INVITE with SDP and a 200 OK answer, plus the full
//! `classify` path (parse + every check) and serialization.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use holdfast::sip::{classify, parse, Policy};

const INVITE: &[u8] = b"INVITE sip:+15551234567@holdfast.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:198.51.100.10;lr;ftag=as1234>\r\n\
From: \"Caller Name\" <sip:+15557654321@carrier.example.net;user=phone>;tag=as1234abcd\r\n\
To: <sip:+15551234567@holdfast.example.com;user=phone>\r\n\
Contact: <sip:+15557654321@198.51.100.10:5060;transport=udp>\r\n\
Call-ID: 6f7a1c2b3d4e5f60718293a4b5c6d7e8@198.51.100.10\r\n\
CSeq: 102 INVITE\r\n\
User-Agent: CarrierSBC/4.2\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO, REFER, NOTIFY\r\n\
Supported: timer, replaces\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
P-Asserted-Identity: <sip:+15557654321@carrier.example.net;user=phone>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 239\r\n\
\r\n\
v=0\r\n\
o=- 3724394400 3724394400 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 31000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

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
