//! Stream (TCP/TLS) framing of SIP messages (RFC 3261 §18.3): find where one complete
//! message ends in a receive buffer, using the blank line after the headers and the
//! mandatory Content-Length. Keep-alive CRLFs between messages (RFC 5626 §3.5.1 / §4.4.1
//! double-CRLF ping) are skipped and reported so the caller can answer a ping with a pong.
//!
//! Pure function over a byte slice: never reads a socket, never allocates, never panics.

use super::header::HeaderName;
use super::syntax::{parse_digits_u32, trim_ws};

/// Why a stream cannot be framed; the connection should be closed (after a 400 / 513 if the
/// caller can build one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("message on a stream without Content-Length")]
    MissingContentLength,
    #[error("invalid or repeated Content-Length")]
    BadContentLength,
    #[error("header section is not valid")]
    BadHeaders,
}

/// Result of looking at a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed {
    /// Bytes of keep-alive CRLFs at the start of the buffer; discard them first.
    pub skip: usize,
    /// Number of double-CRLF pings within `skip` (RFC 5626 §4.4.1: answer each with CRLF).
    pub pings: usize,
    /// Length of the complete message that starts at `skip`, if one is complete.
    pub message_len: Option<usize>,
}

/// Frame the buffer: `Ok(Some((msg_len, skip)))` when a complete message is available at
/// `buf[skip..skip + msg_len]`, `Ok(None)` when more bytes are needed. Keep-alive CRLFs
/// before the message are counted in `skip`. See [`frame_detailed`] to also learn about
/// pings and to discard CRLFs when no message is complete yet.
pub fn frame(buf: &[u8], max_size: usize) -> Result<Option<(usize, usize)>, FrameError> {
    let f = frame_detailed(buf, max_size)?;
    Ok(f.message_len.map(|len| (len, f.skip)))
}

/// Frame the buffer, reporting keep-alives even when no message is complete.
pub fn frame_detailed(buf: &[u8], max_size: usize) -> Result<Framed, FrameError> {
    let mut skip = 0;
    let mut pings = 0;
    // Leading CRLF / LF runs; each "\r\n\r\n" counts as one ping.
    let mut crlfs = 0;
    while skip < buf.len() {
        match buf[skip] {
            b'\r' if buf.get(skip + 1) == Some(&b'\n') => {
                skip += 2;
                crlfs += 1;
            }
            b'\n' => {
                skip += 1;
                crlfs += 1;
            }
            b'\r' if skip + 1 == buf.len() => break,
            _ => break,
        }
        if crlfs == 2 {
            pings += 1;
            crlfs = 0;
        }
    }
    let rest = &buf[skip..];
    let not_yet = Framed {
        skip,
        pings,
        message_len: None,
    };
    if rest.is_empty() || rest == b"\r" {
        return Ok(not_yet);
    }
    // End of headers: first empty line (CRLF CRLF or LF LF, mixed tolerated).
    let mut pos = 0;
    let mut headers_end = None;
    while let Some(nl) = rest[pos..].iter().position(|&b| b == b'\n') {
        let line_start = pos;
        let line_end = pos + nl;
        pos = line_end + 1;
        let line = &rest[line_start..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() && line_start != 0 {
            headers_end = Some((line_start, pos));
            break;
        }
        if pos > max_size {
            return Err(FrameError::TooLarge(max_size));
        }
    }
    let Some((hdr_len, body_start)) = headers_end else {
        if rest.len() > max_size {
            return Err(FrameError::TooLarge(max_size));
        }
        return Ok(not_yet);
    };
    let head = std::str::from_utf8(&rest[..hdr_len]).map_err(|_| FrameError::BadHeaders)?;
    let mut content_length = None;
    for line in head.split('\n').skip(1) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if content_length == Some(None) {
                // "Content-Length:\r\n 12" — folded value.
                let v = parse_digits_u32(trim_ws(line)).ok_or(FrameError::BadContentLength)?;
                content_length = Some(Some(v));
            }
            continue;
        }
        let Some(colon) = line.find(':') else {
            continue;
        };
        if HeaderName::parse(line[..colon].trim_end_matches([' ', '\t']))
            != HeaderName::ContentLength
        {
            continue;
        }
        if content_length.is_some() {
            return Err(FrameError::BadContentLength);
        }
        let v = trim_ws(&line[colon + 1..]);
        content_length = Some(if v.is_empty() {
            None
        } else {
            Some(parse_digits_u32(v).ok_or(FrameError::BadContentLength)?)
        });
    }
    let cl = match content_length {
        None => return Err(FrameError::MissingContentLength),
        Some(None) => return Err(FrameError::BadContentLength),
        Some(Some(n)) => n as usize,
    };
    let total = body_start
        .checked_add(cl)
        .ok_or(FrameError::TooLarge(max_size))?;
    if total > max_size {
        return Err(FrameError::TooLarge(max_size));
    }
    if rest.len() < total {
        return Ok(not_yet);
    }
    Ok(Framed {
        skip,
        pings,
        message_len: Some(total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc";

    #[test]
    fn frames_one_message_and_leaves_rest() {
        let mut buf = MSG.to_vec();
        buf.extend_from_slice(b"INVITE sip:x");
        assert_eq!(frame(&buf, 1000), Ok(Some((MSG.len(), 0))));
        assert_eq!(frame(&buf[..MSG.len() - 1], 1000), Ok(None));
        assert_eq!(frame(&buf[..10], 1000), Ok(None));
    }

    #[test]
    fn keepalives_are_skipped() {
        let mut buf = b"\r\n\r\n\r\n\r\n".to_vec();
        let f = frame_detailed(&buf, 1000).unwrap();
        assert_eq!((f.skip, f.pings, f.message_len), (8, 2, None));
        buf.extend_from_slice(MSG);
        assert_eq!(frame(&buf, 1000), Ok(Some((MSG.len(), 8))));
        assert_eq!(frame(b"\r\n\r", 1000), Ok(None));
    }

    #[test]
    fn errors() {
        assert_eq!(
            frame(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", 1000),
            Err(FrameError::MissingContentLength)
        );
        assert_eq!(
            frame(
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 1\r\n\r\nx",
                1000
            ),
            Err(FrameError::BadContentLength)
        );
        assert_eq!(
            frame(
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
                1000
            ),
            Err(FrameError::BadContentLength)
        );
        assert_eq!(
            frame(
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n",
                1000
            ),
            Err(FrameError::TooLarge(1000))
        );
        assert_eq!(frame(&[b'A'; 2000], 1000), Err(FrameError::TooLarge(1000)));
        assert_eq!(
            frame(
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n  2\r\n\r\nab",
                1000
            ),
            Ok(Some((51, 0)))
        );
    }
}
