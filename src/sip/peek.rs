//! A quick look at a SIP message before it is parsed: the start line and the five header
//! values an admission decision needs (Call-ID, the To tag, the top Via's branch, the CSeq
//! method, User-Agent), read straight from the datagram.
//!
//! Does: scan the header section once, line by line, with the parser's own rules for names
//! (compact forms, any case), values (trimmed) and folding (joined with one SP), so every
//! value it returns is the value [`super::parse`] would give for a message that parses.
//! It is the cheap step in front of the parser for traffic that is about to be dropped.
//!
//! Never: validates the message (a peek is not a verdict: a message it reads may still be
//! refused by the parser), allocates unless a header it needs is folded, reads the body,
//! or panics on any input. The To, Via and CSeq values are parsed only when asked for.
use std::borrow::Cow;

use super::header::{list_elements, NameAddr, Via};
use super::syntax::trim_ws;

/// The start line, as far as a peek needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start<'a> {
    /// A request and its method token (case-sensitive, RFC 3261 §7.1).
    Request { method: &'a str },
    /// A response and its status code.
    Response { status: u16 },
}

/// What [`peek`] read: the start line and the raw values of the headers an admission
/// decision needs. The To tag, the top Via's branch and the CSeq method are read from them
/// on demand, so a decision that needs none of them costs none of that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peek<'a> {
    pub start: Start<'a>,
    pub call_id: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
    to: Option<Cow<'a, str>>,
    via: Option<Cow<'a, str>>,
    cseq: Option<Cow<'a, str>>,
}

impl Peek<'_> {
    /// The request method, or `None` for a response.
    pub fn method(&self) -> Option<&str> {
        match self.start {
            Start::Request { method } => Some(method),
            Start::Response { .. } => None,
        }
    }

    /// The `tag` parameter of To (RFC 3261 §19.3): present on requests inside a dialog.
    pub fn to_tag(&self) -> Option<&str> {
        let v = self.to.as_deref()?;
        // Most requests a flood is made of have none: skip the name-addr parse.
        if !v
            .as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"tag"))
        {
            return None;
        }
        NameAddr::parse(v, "To").ok()?.tag
    }

    /// The `branch` parameter of the topmost Via.
    pub fn via_branch(&self) -> Option<&str> {
        let v = self.via.as_deref()?;
        Via::parse(list_elements(v).next().unwrap_or(""))
            .ok()?
            .branch
    }

    /// The method of CSeq (what a response answers).
    pub fn cseq_method(&self) -> Option<&str> {
        let (num, method) = trim_ws(self.cseq.as_deref()?).split_once([' ', '\t'])?;
        (!num.is_empty()).then(|| trim_ws(method))
    }
}

/// Reads the start line and the headers an admission decision needs; `None` when not even
/// a SIP start line can be found.
pub fn peek(data: &[u8]) -> Option<Peek<'_>> {
    // The parser skips leading CRLFs (RFC 3261 §7.5).
    let skip = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    let mut lines = Lines {
        data: &data[skip..],
    };
    let start = start_line(std::str::from_utf8(lines.next()?).ok()?)?;
    let mut p = Peek {
        start,
        call_id: None,
        user_agent: None,
        to: None,
        via: None,
        cseq: None,
    };
    // The header being read: which field it fills, and its (possibly folded) value.
    let mut current: Option<(Field, Cow<'_, str>)> = None;
    let mut seen = 0u8;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // Continuation (RFC 3261 §7.3.1): unfolded into the value with one SP.
            if let Some((_, v)) = current.as_mut() {
                let Ok(cont) = std::str::from_utf8(line) else {
                    current = None;
                    continue;
                };
                let cont = trim_ws(cont);
                if !cont.is_empty() {
                    let v = v.to_mut();
                    if !v.is_empty() {
                        v.push(' ');
                    }
                    v.push_str(cont);
                }
            }
            continue;
        }
        if let Some((field, value)) = current.take() {
            p.fill(field, value);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let mut name = &line[..colon];
        while let [rest @ .., b' ' | b'\t'] = name {
            name = rest;
        }
        let Some(field) = field_of(name) else {
            continue;
        };
        // Only the first header of each name counts (the top Via; the parser refuses a
        // second To, Call-ID or CSeq).
        if seen & field.bit() != 0 {
            continue;
        }
        seen |= field.bit();
        if let Ok(v) = std::str::from_utf8(&line[colon + 1..]) {
            current = Some((field, Cow::Borrowed(trim_ws(v))));
        }
    }
    if let Some((field, value)) = current {
        p.fill(field, value);
    }
    Some(p)
}

/// The lines of a datagram without their CR LF; the last one may end the datagram without.
struct Lines<'a> {
    data: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.data.is_empty() {
            return None;
        }
        let (line, rest) = match self.data.iter().position(|&b| b == b'\n') {
            Some(nl) => (&self.data[..nl], &self.data[nl + 1..]),
            None => (self.data, &self.data[self.data.len()..]),
        };
        self.data = rest;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// The five header names a peek reads, in any case and in their compact forms (RFC 3261
/// §7.3.3), as [`HeaderName::parse`] recognises them.
fn field_of(name: &[u8]) -> Option<Field> {
    let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
    match name.len() {
        1 => match name[0].to_ascii_lowercase() {
            b't' => Some(Field::To),
            b'i' => Some(Field::CallId),
            b'v' => Some(Field::Via),
            _ => None,
        },
        2 if is(b"to") => Some(Field::To),
        3 if is(b"via") => Some(Field::Via),
        4 if is(b"cseq") => Some(Field::CSeq),
        7 if is(b"call-id") => Some(Field::CallId),
        10 if is(b"user-agent") => Some(Field::UserAgent),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    CallId,
    To,
    Via,
    CSeq,
    UserAgent,
}

impl Field {
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl<'a> Peek<'a> {
    fn fill(&mut self, f: Field, value: Cow<'a, str>) {
        let slot = match f {
            Field::CallId => &mut self.call_id,
            Field::UserAgent => &mut self.user_agent,
            Field::To => &mut self.to,
            Field::Via => &mut self.via,
            Field::CSeq => &mut self.cseq,
        };
        *slot = Some(value);
    }
}

fn start_line(line: &str) -> Option<Start<'_>> {
    if let Some(rest) = line
        .get(..8)
        .filter(|v| v.eq_ignore_ascii_case("SIP/2.0 "))
        .map(|_| &line[8..])
    {
        let status: u16 = rest.get(..3)?.parse().ok()?;
        return (100..=699)
            .contains(&status)
            .then_some(Start::Response { status });
    }
    let (method, rest) = line.split_once(' ')?;
    let valid = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    (valid && rest.rsplit_once(' ').is_some()).then_some(Start::Request { method })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::HeaderName;
    use crate::sip::message::{parse, Message};

    const INVITE: &str = "INVITE sip:+15551230000@hf.example SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKold\r\n\
        Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKolder\r\n\
        From: \"A\" <sip:a@x>;tag=f1\r\nTo: <sip:+15551230000@hf.example>\r\n\
        Call-ID: c1@192.0.2.1\r\nCSeq: 1 INVITE\r\nUser-Agent: friendly-scanner\r\n\
        Max-Forwards: 70\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn reads_the_fields_an_admission_decision_needs() {
        let p = peek(INVITE.as_bytes()).unwrap();
        assert_eq!(p.start, Start::Request { method: "INVITE" });
        assert_eq!(p.call_id.as_deref(), Some("c1@192.0.2.1"));
        assert_eq!(p.to_tag(), None);
        assert_eq!(p.via_branch(), Some("z9hG4bKabc"));
        assert_eq!(p.cseq_method(), Some("INVITE"));
        assert_eq!(p.user_agent.as_deref(), Some("friendly-scanner"));
    }

    #[test]
    fn compact_forms_folding_and_a_tag_inside_the_uri() {
        let m = "BYE sip:x@y SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            t: \"B;tag=no\" <sip:b@y;tag=uri>\r\n  ;tag=real\r\ni: c2\r\nf: <sip:a@x>;tag=1\r\n\
            CSeq:   2   BYE\r\nl: 0\r\n\r\n";
        let p = peek(m.as_bytes()).unwrap();
        assert_eq!(p.to_tag(), Some("real"));
        assert!(
            matches!(p.to, Some(Cow::Owned(_))),
            "folded: unfolded into a copy"
        );
        assert_eq!(p.call_id.as_deref(), Some("c2"));
        assert_eq!(p.cseq_method(), Some("BYE"));
        assert_eq!(p.via_branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn responses_and_garbage() {
        let r = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\r\nCSeq: 7 OPTIONS\r\n\r\n";
        let p = peek(r.as_bytes()).unwrap();
        assert_eq!(p.start, Start::Response { status: 200 });
        assert_eq!(p.method(), None);
        assert_eq!(p.cseq_method(), Some("OPTIONS"));
        for junk in [
            &b""[..],
            b"\r\n\r\n",
            b"hello",
            b"SIP/2.0 2",
            b"SIP/2.0 999 Big\r\n\r\n",
            b"\xff\xfe INVITE",
            b"INVITE\r\n",
        ] {
            assert!(peek(junk).is_none(), "{junk:?}");
        }
        // A header section with no blank line and broken header lines: still a peek.
        let p = peek(b"OPTIONS sip:a SIP/2.0\r\nnonsense\r\nTo: <sip:a>;tag=9").unwrap();
        assert_eq!(p.to_tag(), Some("9"));
    }

    #[test]
    fn the_names_read_are_the_parsers_names() {
        for name in [
            "To",
            "t",
            "T",
            "tO",
            "Via",
            "v",
            "V",
            "VIA",
            "CSeq",
            "cseq",
            "Call-ID",
            "i",
            "I",
            "call-id",
            "User-Agent",
            "user-agent",
            "From",
            "f",
            "Contact",
            "m",
            "Server",
            "x",
            "To2",
            "Vias",
            "Call-I",
            "UserAgent",
        ] {
            let ours = field_of(name.as_bytes());
            let theirs = match HeaderName::parse(name) {
                HeaderName::To => Some(Field::To),
                HeaderName::Via => Some(Field::Via),
                HeaderName::CSeq => Some(Field::CSeq),
                HeaderName::CallId => Some(Field::CallId),
                HeaderName::UserAgent => Some(Field::UserAgent),
                _ => None,
            };
            assert_eq!(ours, theirs, "{name}");
        }
    }

    /// Every message the parser accepts — the RFC 4475 torture corpus and the ones above —
    /// peeks to the values the parser gives.
    #[test]
    fn agrees_with_the_parser_on_every_message_it_accepts() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/rfc4475");
        let mut corpus: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "dat"))
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        (name, std::fs::read(e.path()).unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(corpus.len() >= 40, "RFC 4475 corpus not found in {dir:?}");
        corpus.push(("invite".into(), INVITE.as_bytes().to_vec()));
        let mut checked = 0;
        for (name, bytes) in &corpus {
            let Ok(msg) = parse(bytes) else { continue };
            let p = peek(bytes).unwrap_or_else(|| panic!("{name}: parsed but no peek"));
            let h = msg.headers();
            match &msg {
                Message::Request(r) => {
                    assert_eq!(p.method(), Some(r.method.as_str()), "{name}")
                }
                Message::Response(r) => {
                    assert_eq!(p.start, Start::Response { status: r.status }, "{name}")
                }
            }
            if let Ok(id) = h.call_id() {
                assert_eq!(p.call_id.as_deref(), Some(id), "{name}: Call-ID");
            }
            if let Ok(to) = h.to() {
                assert_eq!(p.to_tag(), to.tag(), "{name}: To tag");
            }
            if let Ok(via) = h.top_via() {
                assert_eq!(p.via_branch(), via.branch, "{name}: branch");
            }
            if let Ok(cseq) = h.cseq() {
                assert_eq!(p.cseq_method(), Some(cseq.method.as_str()), "{name}: CSeq");
            }
            assert_eq!(
                p.user_agent.as_deref(),
                h.get(HeaderName::UserAgent),
                "{name}: User-Agent"
            );
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} messages parsed");
    }
}
