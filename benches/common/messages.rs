//! SIP messages the criterion benches share.

/// A typical carrier INVITE with SDP (record-routed, session timer, P-Asserted-Identity).
pub const INVITE: &[u8] = b"INVITE sip:+15551234567@holdfast.example.com;user=phone SIP/2.0\r\n\
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
