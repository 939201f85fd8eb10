//! RFC 4475 torture tests: every message in `../shared/conformance/rfc4475/` goes through
//! `sip::classify` and must get exactly the outcome in `EXPECTED` (RFC 4475 §3.1-§3.4).
//! Valid messages are also checked field by field and round-tripped through serialization.

use std::collections::BTreeSet;
use std::path::PathBuf;

use holdfast::sip::header::HeaderName;
use holdfast::sip::{classify, parse, Contacts, Message, Method, Policy, Uri, Verdict};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// RFC 4475 §3.1.1: parse, pass every check, every typed accessor works.
    Valid,
    /// Handled normally (application-layer / compatibility tests).
    Handle,
    /// Rejected with this status and a routable stateless response; the detail must
    /// mention the second field (so it is rejected for the reason the RFC describes).
    Reject(u16, &'static str),
    /// Dropped without an answer.
    Drop,
}

use Expect::*;

const EXPECTED: &[(&str, Expect)] = &[
    // §3.1.1 valid messages
    ("wsinv", Valid),
    ("intmeth", Valid),
    ("esc01", Valid),
    ("escnull", Valid),
    ("esc02", Valid),
    ("lwsdisp", Valid),
    ("longreq", Valid),
    ("dblreq", Valid),
    ("semiuri", Valid),
    ("transports", Valid),
    ("mpart01", Valid),
    ("unreason", Valid),
    ("noreason", Valid),
    // §3.1.2 invalid messages: 400 (505) when routable, responses dropped
    ("badinv01", Reject(400, "Via")),
    ("clerr", Reject(400, "shorter than Content-Length")),
    ("ncl", Reject(400, "Content-Length")),
    ("scalar02", Reject(400, "CSeq")),
    ("scalarlg", Drop),
    ("quotbal", Reject(400, "To")),
    ("ltgtruri", Reject(400, "Request-URI")),
    ("lwsruri", Reject(400, "Request-URI")),
    ("lwsstart", Reject(400, "Request-URI")),
    ("trws", Reject(400, "start line")),
    ("escruri", Reject(400, "Request-URI")),
    ("baddate", Reject(400, "Date")),
    ("regbadct", Reject(400, "Contact")),
    ("badaspec", Reject(400, "To")),
    ("baddn", Reject(400, "From")),
    ("badvers", Reject(505, "version")),
    ("mismatch01", Reject(400, "CSeq method")),
    ("mismatch02", Reject(400, "CSeq method")),
    ("bigcode", Drop),
    // §3.2 transaction layer
    ("badbranch", Handle),
    // §3.3 application layer
    ("insuf", Reject(400, "missing")),
    ("unkscm", Reject(416, "scheme")),
    // §3.3.3: "If an element will never accept this scheme as meaningful in a
    // Request-URI, it is appropriate to treat it as unknown and return a 416"; holdfast
    // serves sip/sips/tel only. (Handled when the policy lists the scheme, see below.)
    ("novelsc", Reject(416, "scheme")),
    ("unksm2", Handle),
    ("bext01", Reject(420, "Require")),
    ("invut", Reject(415, "body type")),
    ("regaut01", Handle),
    ("multi01", Reject(400, "more than once")),
    ("mcl01", Reject(400, "Content-Length")),
    ("bcast", Handle),
    // OPTIONS is answered locally by default; 483 when forwarding (checked below).
    ("zeromf", Handle),
    ("cparam01", Handle),
    ("cparam02", Handle),
    ("regescrt", Handle),
    ("sdp01", Reject(406, "Accept")),
    // §3.4
    ("inv2543", Handle),
    // In the archive, used by no section: no request line version, no Via -> drop.
    ("test", Drop),
];

/// `../shared/conformance/rfc4475` beside the repository (a fresh clone); a git worktree
/// nested one level deeper (`wt/<name>`) finds it at `../../shared`. `RFC4475_DIR` overrides.
fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RFC4475_DIR") {
        return PathBuf::from(d);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let beside = root.join("../shared/conformance/rfc4475");
    if beside.is_dir() {
        return beside;
    }
    root.join("../../shared/conformance/rfc4475")
}

fn load(name: &str) -> Vec<u8> {
    let p = dir().join(format!("{name}.dat"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every accessor a B2BUA uses must work on a valid message, and serialization must
/// round-trip the fields that matter.
fn check_valid(name: &str, m: &Message<'_>) {
    let h = m.headers();
    let vias = h.vias().unwrap_or_else(|e| panic!("{name}: vias {e}"));
    assert!(!vias.is_empty());
    h.top_via().unwrap();
    let from = h.from().unwrap_or_else(|e| panic!("{name}: from {e}"));
    let to = h.to().unwrap_or_else(|e| panic!("{name}: to {e}"));
    let call_id = h.call_id().unwrap();
    let cseq = h.cseq().unwrap();
    let contacts = h
        .contacts()
        .unwrap_or_else(|e| panic!("{name}: contact {e}"));
    let mf = h.max_forwards().unwrap();
    h.content_type().unwrap();
    h.routes().unwrap();
    h.record_routes().unwrap();
    h.require().unwrap();
    h.supported().unwrap();
    h.session_expires().unwrap();
    if let Message::Request(r) = m {
        assert_eq!(cseq.method, r.method, "{name}");
        assert!(mf.is_some(), "{name}: Max-Forwards");
        assert!(from.tag().is_some(), "{name}: From tag");
        r.uri_parsed().unwrap();
    }
    if let Some(cl) = h.content_length().unwrap() {
        assert_eq!(cl as usize, m.body().len(), "{name}: body length");
    }
    // Round trip.
    let bytes = m.to_bytes();
    let m2 = parse(&bytes).unwrap_or_else(|e| panic!("{name}: reparse {e:?}"));
    let h2 = m2.headers();
    assert_eq!(h2.vias().unwrap(), vias, "{name}");
    assert_eq!(h2.from().unwrap(), from, "{name}");
    assert_eq!(h2.to().unwrap(), to, "{name}");
    assert_eq!(h2.call_id().unwrap(), call_id, "{name}");
    assert_eq!(h2.cseq().unwrap(), cseq, "{name}");
    assert_eq!(h2.contacts().unwrap(), contacts, "{name}");
    assert_eq!(m2.body(), m.body(), "{name}");
    assert_eq!(h2.len(), h.len(), "{name}");
}

/// Message-specific facts from RFC 4475 §3.1.1.
fn check_details(name: &str, m: &Message<'_>) {
    let h = m.headers();
    match name {
        "wsinv" => {
            assert_eq!(h.vias().unwrap().len(), 3);
            assert_eq!(
                h.from().unwrap().display_name().unwrap(),
                "J Rosenberg \\\""
            );
            assert_eq!(h.from().unwrap().tag(), Some("98asjd8"));
            assert_eq!(h.to().unwrap().tag(), Some("1918181833n"));
            let c = h.contacts().unwrap();
            let c = &c.as_slice()[0];
            assert_eq!(c.display_name().unwrap(), "Quoted string \"\"");
            assert_eq!(c.params.get("newparam"), Some(Some("newvalue")));
            assert_eq!(c.params.get("secondparam"), Some(None));
            assert_eq!(c.params.get("q"), Some(Some("0.33")));
            assert_eq!(h.get(HeaderName::Subject), Some(""));
            assert_eq!(
                h.get(HeaderName::Other("NewFangledHeader")),
                Some("newfangled value continued newfangled value")
            );
            assert_eq!(
                h.get(HeaderName::Other("UnknownHeaderWithUnusualValue")),
                Some(";;,,;;,;")
            );
            assert_eq!(h.max_forwards().unwrap(), Some(68));
            assert_eq!(h.cseq().unwrap().seq, 9);
            let r = h.routes().unwrap();
            let Uri::Sip(u) = &r[0].uri else { panic!() };
            assert!(u.lr());
            assert_eq!(u.params.get("unknown-no-value"), Some(None));
        }
        "intmeth" => {
            let Message::Request(r) = m else { panic!() };
            assert_eq!(
                r.method,
                Method::Extension("!interesting-Method0123456789_*+`.%indeed'~")
            );
            assert_eq!(h.from().unwrap().tag(), Some("_token~1'+`*%!-."));
        }
        "esc01" => {
            let Message::Request(r) = m else { panic!() };
            let Ok(Uri::Sip(u)) = r.uri_parsed() else {
                panic!()
            };
            assert_eq!(u.user_unescaped().unwrap(), "sips:user@example.com");
            let Uri::Sip(f) = h.from().unwrap().uri else {
                panic!()
            };
            assert_eq!(f.user_unescaped().unwrap(), "I have spaces");
        }
        "escnull" => {
            let c = h.contacts().unwrap();
            assert_eq!(c.as_slice().len(), 2);
            let Uri::Sip(u) = &c.as_slice()[1].uri else {
                panic!()
            };
            assert_eq!(u.user_unescaped().unwrap(), "\0\0");
        }
        "esc02" => {
            let Message::Request(r) = m else { panic!() };
            assert_eq!(r.method, Method::Extension("RE%47IST%45R"));
            assert_eq!(h.contacts().unwrap().as_slice().len(), 2);
            assert_eq!(h.to().unwrap().display_name().unwrap(), "%Z%45");
        }
        "lwsdisp" => assert_eq!(h.from().unwrap().display, Some("caller")),
        "longreq" => {
            let vias = h.vias().unwrap();
            assert_eq!(vias.len(), 34);
            assert_eq!(vias[0].host.to_string(), "sip33.example.com");
            assert!(vias[33].branch.unwrap().ends_with("branchvalue"));
            assert!(h.from().unwrap().tag().unwrap().len() > 150);
        }
        "dblreq" => {
            let Message::Request(r) = m else { panic!() };
            assert_eq!(r.method, Method::Register);
            assert!(r.body.is_empty());
        }
        "semiuri" => {
            let Message::Request(r) = m else { panic!() };
            let Ok(Uri::Sip(u)) = r.uri_parsed() else {
                panic!()
            };
            assert_eq!(u.user_unescaped().unwrap(), "user;par=u@example.net");
            assert_eq!(h.accept().unwrap().unwrap().len(), 6);
        }
        "transports" => {
            let t: Vec<_> = h.vias().unwrap().iter().map(|v| v.transport).collect();
            assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
        }
        "mpart01" => {
            assert_eq!(m.body().len(), 553);
            assert_eq!(h.top_via().unwrap().rport, Some(None));
        }
        "unreason" => {
            let Message::Response(r) = m else { panic!() };
            assert_eq!(r.status, 200);
            assert!(r.reason.starts_with("= 2**3 * 5**2 но"));
        }
        "noreason" => {
            let Message::Response(r) = m else { panic!() };
            assert_eq!((r.status, r.reason), (100, ""));
        }
        _ => {}
    }
}

fn check_reject(name: &str, bytes: &[u8], status: u16, response: &[u8]) {
    let resp = parse(response).unwrap_or_else(|e| panic!("{name}: our response {e:?}"));
    let Message::Response(r) = resp else {
        panic!("{name}: not a response")
    };
    assert_eq!(r.status, status, "{name}");
    // The response goes back along the request's Vias (RFC 3261 §8.2.6.2).
    let req_text = String::from_utf8_lossy(bytes);
    let top = r.headers.get(HeaderName::Via).expect("Via copied");
    assert!(
        req_text.contains(top.split(',').next().unwrap().trim()),
        "{name}: {top}"
    );
    // A To tag is added when a To was present.
    if r.headers.contains(HeaderName::To) {
        assert!(
            r.headers.get(HeaderName::To).unwrap().contains(";tag="),
            "{name}"
        );
    }
    match status {
        420 => assert_eq!(
            r.headers.get(HeaderName::Unsupported),
            Some("nothingSupportsThis, nothingSupportsThisEither")
        ),
        415 => assert_eq!(
            r.headers.get(HeaderName::Accept),
            Some("application/sdp, multipart/mixed")
        ),
        _ => {}
    }
}

#[test]
fn every_file_is_in_the_table_and_gets_its_outcome() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .expect("../shared/conformance/rfc4475 next to the repository")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "dat").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    let in_table: BTreeSet<String> = EXPECTED.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk.len(), 50);
    assert_eq!(on_disk, in_table);

    let policy = Policy::default();
    let mut failures = Vec::new();
    for &(name, expect) in EXPECTED {
        let bytes = load(name);
        let verdict = classify(&bytes, &policy);
        let ok = match (&verdict, expect) {
            (Verdict::Handle(m), Valid) => {
                check_valid(name, m);
                check_details(name, m);
                true
            }
            (Verdict::Handle(_), Handle) => true,
            (
                Verdict::Reject {
                    status,
                    response: Some(resp),
                    detail,
                },
                Reject(want, why),
            ) if *status == want && detail.contains(why) => {
                check_reject(name, &bytes, want, resp);
                true
            }
            (Verdict::Drop { .. }, Drop) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {verdict:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn zeromf_gets_483_when_forwarded() {
    let bytes = load("zeromf");
    let policy = Policy {
        local_methods: vec![],
        ..Policy::default()
    };
    match classify(&bytes, &policy) {
        Verdict::Reject {
            status: 483,
            response: Some(r),
            ..
        } => check_reject("zeromf", &bytes, 483, &r),
        v => panic!("{v:?}"),
    }
}

#[test]
fn novelsc_is_handled_when_the_scheme_is_served() {
    let bytes = load("novelsc");
    let mut policy = Policy::default();
    policy.uri_schemes.push("soap.beep".into());
    assert!(matches!(classify(&bytes, &policy), Verdict::Handle(_)));
}

#[test]
fn application_layer_messages_parse_as_the_rfc_describes() {
    let get = |n: &str| load(n);
    // unksm2: registered non-SIP schemes in To, From, Contact.
    let b = get("unksm2");
    let m = parse(&b).unwrap();
    let h = m.headers();
    assert_eq!(h.to().unwrap().uri.scheme(), "isbn");
    assert_eq!(h.from().unwrap().uri.scheme(), "http");
    assert_eq!(h.contacts().unwrap().as_slice()[0].uri.scheme(), "name");
    // cparam01: unknownparam is a contact param, not a URI param.
    let b = get("cparam01");
    let m = parse(&b).unwrap();
    let c = m.headers().contacts().unwrap();
    let Contacts::List(c) = c else { panic!() };
    assert!(c[0].params.contains("unknownparam"));
    assert!(c[0].uri.as_sip().unwrap().params.is_empty());
    // cparam02: it is a URI param.
    let b = get("cparam02");
    let m = parse(&b).unwrap();
    let c = m.headers().contacts().unwrap();
    assert!(c.as_slice()[0]
        .uri
        .as_sip()
        .unwrap()
        .params
        .contains("unknownparam"));
    // regescrt: escaped header in the Contact URI.
    let b = get("regescrt");
    let m = parse(&b).unwrap();
    let c = m.headers().contacts().unwrap();
    let pairs: Vec<_> = c.as_slice()[0]
        .uri
        .as_sip()
        .unwrap()
        .header_pairs()
        .collect();
    assert_eq!(pairs, [("Route", "%3Csip:sip.example.com%3E")]);
    // bcast: second Via is the broadcast address.
    let b = get("bcast");
    let m = parse(&b).unwrap();
    assert_eq!(
        m.headers().vias().unwrap()[1].host.to_string(),
        "255.255.255.255"
    );
    // badbranch: branch is exactly the cookie.
    let b = get("badbranch");
    let m = parse(&b).unwrap();
    let v = m.headers().top_via().unwrap();
    assert_eq!(v.branch, Some("z9hG4bK"));
    assert!(!v.has_rfc3261_branch());
    // inv2543: no branch, no From tag, no Content-Length, body is the rest of the datagram.
    let b = get("inv2543");
    let m = parse(&b).unwrap();
    let h = m.headers();
    assert_eq!(h.top_via().unwrap().branch, None);
    assert_eq!(h.from().unwrap().tag(), None);
    assert_eq!(h.content_length().unwrap(), None);
    assert_eq!(h.max_forwards().unwrap(), None);
    assert!(m.body().starts_with(b"v=0\r\n") && m.body().ends_with(b"RTP/AVP 0\r\n"));
    // badvers: 505 from the parser itself.
    let b = get("badvers");
    assert_eq!(parse(&b).unwrap_err().status(), 505);
}

/// Deterministic xorshift64* so the corpus walk is reproducible without extra deps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = b"\r\n\t :;,<>\"\\%@=/?[]*0129\x00\x7f\xff\xc3";

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], buf: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = buf.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                buf[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                buf.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(16) + 1);
                buf.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(32) + 1);
                let chunk = buf[i..i + n].to_vec();
                let at = rng.below(buf.len() + 1);
                buf.splice(at..at, chunk);
            }
            4 => buf.truncate(rng.below(len + 1)),
            5 => {
                // Splice a piece of another message in.
                let other = &corpus[rng.below(corpus.len())];
                let i = rng.below(other.len());
                let n = rng.below((other.len() - i).min(64) + 1);
                let at = rng.below(len + 1);
                buf.splice(at..at, other[i..i + n].iter().copied());
            }
            _ if len > 0 => {
                let i = rng.below(len);
                buf[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            _ => {}
        }
    }
}

/// Exercise everything an integrator would call on a message; must never panic, and a
/// handled message must survive serialize -> parse with its key fields intact.

#[test]
fn mutated_corpus_never_panics() {
    let corpus: Vec<Vec<u8>> = EXPECTED.iter().map(|(n, _)| load(n)).collect();
    let policy = Policy::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut handled = 0;
    for i in 0..20_000 {
        let mut buf = corpus[i % corpus.len()].clone();
        mutate(&mut rng, &corpus, &mut buf);
        let _ = holdfast::sip::framing::frame(&buf, 4096);
        if let Ok(m) = parse(&buf) {
            holdfast::sip::oracle::check_message(&m);
        }
        match classify(&buf, &policy) {
            Verdict::Handle(m) => {
                handled += 1;
                holdfast::sip::oracle::check_message(&m);
            }
            Verdict::Reject {
                response: Some(r), ..
            } => {
                // Our own error responses must always parse.
                parse(&r).unwrap_or_else(|e| panic!("{e:?}\n{}", String::from_utf8_lossy(&r)));
            }
            _ => {}
        }
    }
    // The walk must reach deep code, not just fail at the first line.
    assert!(
        handled > 1000,
        "only {handled} mutated messages were handled"
    );
}

/// Inputs that once crashed the fuzzer (`fuzz/`), kept as regression fixtures.
#[test]
fn fuzz_fixtures_do_not_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sip");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("tests/fixtures/sip") {
        let buf = std::fs::read(e.unwrap().path()).unwrap();
        let _ = holdfast::sip::framing::frame(&buf, 4096);
        if let Ok(m) = parse(&buf) {
            holdfast::sip::oracle::check_message(&m);
        }
        match classify(&buf, &Policy::default()) {
            Verdict::Handle(m) => holdfast::sip::oracle::check_message(&m),
            Verdict::Reject {
                response: Some(r), ..
            } => {
                parse(&r).unwrap();
            }
            _ => {}
        }
        n += 1;
    }
    assert!(n >= 2);
}

#[test]
fn requests_without_via_or_cseq_are_dropped_not_answered() {
    let no_via = b"OPTIONS sip:a@b SIP/2.0\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert!(matches!(
        classify(no_via, &Policy::default()),
        Verdict::Drop { .. }
    ));
    let no_cseq = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n";
    assert!(matches!(
        classify(no_cseq, &Policy::default()),
        Verdict::Drop { .. }
    ));
}
