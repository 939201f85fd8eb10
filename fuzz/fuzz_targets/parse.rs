//! Fuzz target: parse -> (if ok) every accessor -> serialize -> parse again -> key fields
//! equal; plus `classify` and stream framing on the same input. Run on stable with
//! `cargo fuzz run -s none parse` (seed it first:
//! `mkdir -p fuzz/corpus/parse && cp ../shared/conformance/rfc4475/*.dat fuzz/corpus/parse/`).
#![no_main]

use holdfast::sip::{classify, framing, parse, Message, Policy, Verdict};
use libfuzzer_sys::fuzz_target;


fuzz_target!(|data: &[u8]| {
    let _ = framing::frame(data, 4096);
    if let Ok(m) = parse(data) {
        holdfast::sip::oracle::check_message(&m);
    }
    match classify(data, &Policy::default()) {
        Verdict::Handle(m) => holdfast::sip::oracle::check_message(&m),
        Verdict::Reject {
            response: Some(r), ..
        } => {
            parse(&r).expect("our error responses parse");
        }
        _ => {}
    }
});
