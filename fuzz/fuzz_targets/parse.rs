//! Fuzz target: parse -> (if ok) every accessor -> serialize -> parse again -> key fields
//! equal; plus `classify` and stream framing on the same input. Run on stable with
//! `cargo fuzz run -s none parse` (seed it first:
//! `mkdir -p fuzz/corpus/parse && cp ../shared/conformance/rfc4475/*.dat fuzz/corpus/parse/`).
#![no_main]

use holdfast::sip::{classify, framing, parse, Message, Policy, Verdict};
use libfuzzer_sys::fuzz_target;

fn exercise(m: &Message<'_>) {
    let h = m.headers();
    let vias = h.vias();
    let _ = h.top_via().map(|v| v.to_string());
    let from = h.from();
    let to = h.to();
    let _ = from
        .as_ref()
        .map(|f| (f.to_string(), f.display_name(), f.tag()));
    let _ = to.as_ref().map(|t| t.to_string());
    let cseq = h.cseq();
    let call_id = h.call_id();
    let contacts = h.contacts();
    let _ = contacts.as_ref().map(|c| {
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
        let resp = holdfast::sip::ResponseBuilder::for_request(r, 200, None)
            .to_tag("t1")
            .build();
        let resp = parse(&resp).expect("our response parses");
        let got: Vec<_> = resp
            .headers()
            .values(holdfast::sip::HeaderName::Via)
            .collect();
        let want: Vec<_> = h.values(holdfast::sip::HeaderName::Via).collect();
        assert_eq!(got, want);
    }
    // Display output of typed values must parse back to the same key fields.
    if let Ok(vias) = &vias {
        for v in vias {
            let text = v.to_string();
            let again = holdfast::sip::Via::parse(&text).expect("Via Display parses");
            assert_eq!(
                (again.branch, again.host, again.port),
                (v.branch, v.host, v.port)
            );
        }
    }
    for na in [&from, &to].into_iter().flatten() {
        let text = na.to_string();
        let again = holdfast::sip::NameAddr::parse(&text, "x").expect("NameAddr Display parses");
        assert_eq!((again.uri_raw, again.tag), (na.uri_raw, na.tag));
        assert_eq!(again.display_name(), na.display_name());
        let u = na.uri.to_string();
        assert_eq!(holdfast::sip::Uri::parse(&u).as_ref(), Ok(&na.uri));
    }
    let bytes = m.to_bytes();
    let m2 = parse(&bytes).expect("a parsed message must re-parse after serialization");
    let h2 = m2.headers();
    assert_eq!(h2.vias().ok(), vias.ok());
    assert_eq!(h2.from().ok(), from.ok());
    assert_eq!(h2.to().ok(), to.ok());
    assert_eq!(h2.cseq().ok(), cseq.ok());
    assert_eq!(h2.call_id().ok(), call_id.ok());
    assert_eq!(h2.contacts().ok(), contacts.ok());
    assert_eq!(m2.body(), m.body());
    // Serialization always writes exactly one Content-Length (it may have been absent).
    fn non_cl(h: &holdfast::sip::Headers<'_>) -> Vec<(String, String)> {
        h.iter()
            .filter(|e| e.name != holdfast::sip::HeaderName::ContentLength)
            .map(|e| (e.name.as_str().to_ascii_lowercase(), e.value.to_string()))
            .collect()
    }
    assert_eq!(non_cl(h2), non_cl(h));
}

fuzz_target!(|data: &[u8]| {
    let _ = framing::frame(data, 4096);
    if let Ok(m) = parse(data) {
        exercise(&m);
    }
    match classify(data, &Policy::default()) {
        Verdict::Handle(m) => exercise(&m),
        Verdict::Reject {
            response: Some(r), ..
        } => {
            parse(&r).expect("our error responses parse");
        }
        _ => {}
    }
});
