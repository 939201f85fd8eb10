//! holdfast's own SIP message layer (RFC 3261 §7, §20, §25): zero-copy parsing of requests
//! and responses, typed header access, URIs, builders, stream framing and the request-level
//! checks a B2BUA runs before handling a request (RFC 4475 torture-test clean).
//!
//! Everything here is sans-IO: functions take bytes and return values. Nothing here touches
//! a socket, reads a clock, draws random numbers or panics on wire input.
//!
//! Entry points: [`validate::classify`] (bytes -> handle / reject / drop), [`peek::peek`]
//! (the start line and five headers without parsing, for admission), [`parse`],
//! [`framing::frame`], [`build::RequestBuilder`], [`build::ResponseBuilder`].
//!
//! Inside, each module uses only those before it: [`method`] and [`status`] (nothing), then
//! `syntax` and [`uri`], [`header`], [`message`] (parsing), [`build`] (serializing, stateless
//! error responses), and [`validate`], [`peek`] and [`framing`] on top.

pub mod build;
pub mod framing;
pub mod header;
pub mod message;
pub mod method;
#[doc(hidden)]
pub mod oracle;
pub mod peek;
pub mod status;
mod syntax;
pub mod transaction;
pub mod transport;
pub mod uri;
pub mod validate;

pub use build::{RequestBuilder, ResponseBuilder};
pub use framing::{frame, frame_detailed, FrameError, Framed};
pub use header::{
    CSeq, Contacts, HeaderError, HeaderName, MediaType, NameAddr, Reason, Refresher,
    SessionExpires, Via,
};
pub use message::{
    parse, parse_with_limit, Header, Headers, Message, ParseError, ParseErrorKind, Request,
    Response, Salvage,
};
pub use method::Method;
pub use status::reason_phrase;
pub use syntax::{quote, unquote, Params};
pub use transport::Transport;
pub use uri::{
    host_port, socket_host_port, Host, HostPort, OwnedUri, SipUri, TelUri, Uri, UriError,
};
pub use validate::{
    check_max_forwards, check_request, classify, stateless_to_tag, Policy, Rejection, Verdict,
};
