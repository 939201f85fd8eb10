//! Shared RFC 3261 §25 grammar helpers: character classes, quoted strings, quote/angle-aware
//! splitting and generic `;name=value` parameter lists.
//!
//! Everything here works on borrowed `&str` and never allocates except `unquote` when a
//! quoted-pair has to be removed. Nothing here panics on any input: all indexing is done on
//! positions found by scanning the same string, at ASCII boundaries.

use std::borrow::Cow;

/// `token` characters (RFC 3261 §25.1): alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" /
/// "`" / "'" / "~".
#[inline]
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A non-empty `token`.
#[inline]
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// `word` characters (RFC 3261 §25.1), used by Call-ID.
#[inline]
pub(crate) fn is_word_char(b: u8) -> bool {
    is_token_char(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

/// SP or HTAB.
#[inline]
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Trim SP/HTAB on both ends (after unfolding, LWS is only SP/HTAB).
#[inline]
pub(crate) fn trim_ws(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Strict `1*DIGIT` into u64; `None` on empty, non-digit or overflow.
pub(crate) fn parse_digits_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Strict `1*DIGIT` into u32 (leading zeros allowed, RFC 4475 wsinv `0009`).
pub(crate) fn parse_digits_u32(s: &str) -> Option<u32> {
    // Leading zeros may make the string long without the value being large.
    let t = s.trim_start_matches('0');
    if t.len() > 10 || s.is_empty() {
        return None;
    }
    if t.is_empty() {
        return if s.bytes().all(|b| b == b'0') {
            Some(0)
        } else {
            None
        };
    }
    parse_digits_u64(t).and_then(|v| u32::try_from(v).ok())
}

/// Given `s` starting with `"`, returns `(quoted, rest)` where `quoted` includes both quotes.
/// Honours quoted-pair (`\` + any octet except CR/LF). `None` if unterminated.
pub(crate) fn split_quoted(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                match bytes.get(i + 1) {
                    Some(&n) if n != b'\r' && n != b'\n' && n < 0x80 => i += 2,
                    _ => return None,
                }
            }
            b'"' => return Some((&s[..=i], &s[i + 1..])),
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

/// Remove surrounding quotes and quoted-pair escapes of a quoted-string (as returned by
/// `split_quoted`). Input that is not quoted is returned unchanged.
pub fn unquote(q: &str) -> Cow<'_, str> {
    let inner = match q.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(i) => i,
        None => return Cow::Borrowed(q),
    };
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Quote `s` as a quoted-string, escaping `"` and `\` (RFC 3261 §25.1).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits on `sep` outside double quotes and outside `<...>` (RFC 3261 §7.3.1: commas inside
/// quoted strings or angle-bracketed URIs do not separate list elements). Yields raw pieces
/// (untrimmed). An unterminated quote or bracket just runs to the end of the string.
pub(crate) struct SplitOutside<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> SplitOutside<'a> {
    pub(crate) fn new(s: &'a str, sep: u8) -> Self {
        SplitOutside { rest: Some(s), sep }
    }
}

impl<'a> Iterator for SplitOutside<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let bytes = s.as_bytes();
        let mut in_quote = false;
        let mut in_angle = false;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if in_quote {
                if b == b'\\' {
                    i += 2;
                    continue;
                }
                if b == b'"' {
                    in_quote = false;
                }
            } else if b == b'"' {
                in_quote = true;
            } else if in_angle {
                if b == b'>' {
                    in_angle = false;
                }
            } else if b == b'<' {
                in_angle = true;
            } else if b == self.sep {
                self.rest = Some(&s[i + 1..]);
                return Some(&s[..i]);
            }
            i += 1;
        }
        self.rest = None;
        Some(s)
    }
}

/// A `*( SEMI param )` list kept as the raw text it was parsed from (starting at the first
/// `;`, possibly with SWS around separators). Validated when the owning value is parsed, so
/// iteration cannot fail; iteration over unvalidated text is best-effort and never panics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Params<'a> {
    raw: &'a str,
}

impl<'a> Params<'a> {
    /// Wrap raw text (must start with `;` or be empty; not validated here).
    pub(crate) fn from_raw(raw: &'a str) -> Self {
        Params { raw }
    }

    /// The params exactly as received (e.g. `;lr;transport=tcp`).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// True if there are no params.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// `(name, value)` pairs in order; `value` is `None` for a param without `=`. Names and
    /// values are trimmed of SWS; quoted values keep their quotes.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        let mut it = SplitOutside::new(self.raw, b';');
        // The text before the first ';' is not a param.
        it.next();
        it.filter_map(|p| {
            let p = trim_ws(p);
            if p.is_empty() {
                return None;
            }
            match p.find('=') {
                Some(eq) => Some((trim_ws(&p[..eq]), Some(trim_ws(&p[eq + 1..])))),
                None => Some((p, None)),
            }
        })
    }

    /// First param named `name` (case-insensitive, RFC 3261 §7.3.1): `Some(None)` when present
    /// without a value, `Some(Some(v))` with one, `None` when absent.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// True if a param named `name` is present (with or without value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Validate as header `generic-param`s: `token [ EQUAL gen-value ]`, gen-value = token /
    /// host / quoted-string. Returns false on empty params (`;;`) or bad characters.
    pub(crate) fn validate_generic(raw: &str) -> bool {
        let mut it = SplitOutside::new(raw, b';');
        match it.next() {
            Some(first) if trim_ws(first).is_empty() => {}
            _ => return false,
        }
        for p in it {
            let p = trim_ws(p);
            let (name, value) = match p.find('=') {
                Some(eq) => (trim_ws(&p[..eq]), Some(trim_ws(&p[eq + 1..]))),
                None => (p, None),
            };
            if !is_token(name) {
                return false;
            }
            if let Some(v) = value {
                if !is_gen_value(v) {
                    return false;
                }
            }
        }
        true
    }
}

/// gen-value = token / host / quoted-string.
pub(crate) fn is_gen_value(v: &str) -> bool {
    if v.starts_with('"') {
        return matches!(split_quoted(v), Some((_, rest)) if rest.is_empty());
    }
    !v.is_empty()
        && v.bytes()
            .all(|b| is_token_char(b) || b == b'[' || b == b']' || b == b':')
}

/// Equal when the same params appear in the same order (whitespace around separators and
/// the case of names do not matter; values compare exactly).
impl PartialEq for Params<'_> {
    fn eq(&self, other: &Self) -> bool {
        let mut a = self.iter();
        let mut b = other.iter();
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some((n1, v1)), Some((n2, v2))) if n1.eq_ignore_ascii_case(n2) && v1 == v2 => {}
                _ => return false,
            }
        }
    }
}

impl Eq for Params<'_> {}

impl std::fmt::Display for Params<'_> {
    /// Normalized form: `;name=value` with no whitespace.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, v) in self.iter() {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_angles() {
        let v: Vec<_> = SplitOutside::new(r#""a,b" <sip:x;a=1,2>, c"#, b',').collect();
        assert_eq!(v, vec![r#""a,b" <sip:x;a=1,2>"#, " c"]);
        let v: Vec<_> = SplitOutside::new(r#""a\",b", c"#, b',').collect();
        assert_eq!(v, vec![r#""a\",b""#, " c"]);
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(
            split_quoted(r#""J Rosenberg \\\"" <x>"#),
            Some((r#""J Rosenberg \\\"""#, " <x>"))
        );
        assert_eq!(unquote(r#""J Rosenberg \\\"""#), r#"J Rosenberg \""#);
        assert_eq!(split_quoted(r#""unterminated"#), None);
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn params_iterate_with_sws() {
        let p = Params::from_raw(" ;   tag    = 1918181833n ; lr");
        assert!(Params::validate_generic(p.raw()));
        assert_eq!(p.get("TAG"), Some(Some("1918181833n")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("x"), None);
        assert_eq!(p.to_string(), ";tag=1918181833n;lr");
        assert_eq!(p, Params::from_raw(";TAG=1918181833n;lr"));
        assert_ne!(p, Params::from_raw(";tag=1918181833n"));
        assert!(!Params::validate_generic(";;"));
        assert!(!Params::validate_generic(";a=b c"));
    }

    #[test]
    fn digits() {
        assert_eq!(parse_digits_u32("0009"), Some(9));
        assert_eq!(parse_digits_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_digits_u32("4294967296"), None);
        assert_eq!(parse_digits_u32("000000000000000000001"), Some(1));
        assert_eq!(parse_digits_u32(""), None);
        assert_eq!(parse_digits_u32("-1"), None);
        assert_eq!(parse_digits_u32("000"), Some(0));
    }
}
