//! A consistency oracle for parsed messages, shared by the fuzz target (`fuzz/`) and the
//! RFC 4475 tests: every accessor runs, typed values written back parse to the same key
//! fields, a response built for a request carries its Vias in order, and serialize → parse
//! keeps the key fields. It panics when an invariant breaks — that is its purpose; it is
//! never called on the message path.
use super::{parse, HeaderName, Message, NameAddr, ResponseBuilder, Uri, Via};

/// Checks every invariant above on `m`; panics with the message text on a violation.
pub fn check_message(m: &Message<'_>) {
    let h = m.headers();
    let vias = h.vias();
    let _ = h.top_via().map(|v| v.to_string());
    let from = h.from();
    let to = h.to();
    let _ = from
        .as_ref()
        .map(|f| (f.to_string(), f.display_name(), f.tag()));
    let cseq = h.cseq();
    let call_id = h.call_id();
    let _ = h.contacts().map(|c| {
        c.as_slice()
            .iter()
            .map(|c| c.to_string().len())
            .sum::<usize>()
    });
    let _ = (
        h.max_forwards(),
        h.routes(),
        h.record_routes(),
        h.content_type(),
    );
    let _ = (
        h.require(),
        h.supported(),
        h.allow(),
        h.accept(),
        h.session_expires(),
    );
    let _ = (
        h.min_se(),
        h.reasons(),
        h.expires(),
        h.date(),
        h.content_length(),
    );
    if let Message::Request(r) = m {
        let _ = r.uri_parsed().map(|u| u.to_string());
        // A response built for any parsed request must parse and carry its Vias in order.
        let resp = ResponseBuilder::for_request(r, 200, None)
            .to_tag("t1")
            .build();
        let resp = parse(&resp).expect("our response parses");
        let got: Vec<_> = resp.headers().values(HeaderName::Via).collect();
        let want: Vec<_> = h.values(HeaderName::Via).collect();
        assert_eq!(got, want);
    }
    // Display output of typed values must parse back to the same key fields.
    if let Ok(vias) = &vias {
        for v in vias {
            let text = v.to_string();
            let again = Via::parse(&text).expect("Via Display parses");
            assert_eq!(
                (again.branch, again.host, again.port),
                (v.branch, v.host, v.port)
            );
        }
    }
    for na in [&from, &to].into_iter().flatten() {
        let text = na.to_string();
        let again = NameAddr::parse(&text, "x").expect("NameAddr Display parses");
        assert_eq!((again.uri_raw, again.tag), (na.uri_raw, na.tag));
        assert_eq!(again.display_name(), na.display_name());
        let u = na.uri.to_string();
        assert_eq!(Uri::parse(&u).as_ref(), Ok(&na.uri));
    }
    let bytes = m.to_bytes();
    let m2 = parse(&bytes)
        .unwrap_or_else(|e| panic!("reparse failed {e:?}\n{}", String::from_utf8_lossy(&bytes)));
    let h2 = m2.headers();
    assert_eq!(h2.vias().ok(), vias.ok());
    assert_eq!(h2.from().ok(), from.ok());
    assert_eq!(h2.to().ok(), to.ok());
    assert_eq!(h2.cseq().ok(), cseq.ok());
    assert_eq!(h2.call_id().ok(), call_id.ok());
    assert_eq!(m2.body(), m.body());
}
