//! SIPp scenarios used by the integration tests, generated so a test can choose codes and
//! timings. Every scenario is bounded: SIPp's -timeout ends it even if holdfast misbehaves.

const SDP: &str = "v=0\r
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]\r
      s=-\r
      c=IN IP[media_ip_type] [media_ip]\r
      t=0 0\r
      m=audio [media_port] RTP/AVP 0 8 101\r
      a=rtpmap:0 PCMU/8000\r
      a=rtpmap:8 PCMA/8000\r
      a=rtpmap:101 telephone-event/8000\r
      a=fmtp:101 0-15";

fn header() -> &'static str {
    "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<!DOCTYPE scenario SYSTEM \"sipp.dtd\">\n"
}

fn invite(extra_headers: &str) -> String {
    invite_with(extra_headers, SDP)
}

/// The INVITE `<send>` with `sdp` as its body.
fn invite_with(extra_headers: &str, sdp: &str) -> String {
    format!(
        r#"  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      X-Test-Header: passthrough-[call_number]
{extra_headers}      Content-Type: application/sdp
      Content-Length: [len]

      {sdp}
    ]]></send>
"#
    )
}

fn in_dialog(method: &str, cseq: u32) -> String {
    format!(
        r#"  <send retrans="500"><![CDATA[
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
"#
    )
}

fn ack() -> String {
    r#"  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
"#
    .to_string()
}

/// UAC: INVITE, answered, holds `hold_ms`, then hangs up with BYE.
pub fn uac_call(hold_ms: u32) -> String {
    format!(
        r#"{}<scenario name="uac_call">
{}  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
{}  <pause milliseconds="{hold_ms}"/>
{}  <recv response="200" crlf="true"/>
</scenario>
"#,
        header(),
        invite(""),
        ack(),
        in_dialog("BYE", 2)
    )
}

/// UAC: INVITE, answered, then waits for the far side's BYE and answers it.
pub fn uac_wait_bye() -> String {
    format!(
        r#"{}<scenario name="uac_wait_bye">
{}  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
{}  <recv request="BYE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
</scenario>
"#,
        header(),
        invite(""),
        ack()
    )
}

/// UAC: INVITE, waits for 180, CANCELs, expects 200 to the CANCEL and 487 to the INVITE.
pub fn uac_cancel() -> String {
    format!(
        r#"{}<scenario name="uac_cancel">
{}  <recv response="100" optional="true"/>
  <recv response="180"/>
  <send><![CDATA[
      CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200"/>
  <recv response="487"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-6]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
</scenario>
"#,
        header(),
        invite("")
    )
}

/// UAC: INVITE that must end with final response `code` (ACKed). Captures the Reason header
/// into the SIPp log via a regexp check when `reason_contains` is given.
pub fn uac_expect(code: u16, reason_contains: Option<&str>) -> String {
    let check = match reason_contains {
        Some(r) => format!(
            r#"    <action><ereg regexp="{r}" search_in="hdr" header="Reason:" check_it="true" assign_to="reason"/></action>
"#
        ),
        None => String::new(),
    };
    let reference = if reason_contains.is_some() {
        "  <Reference variables=\"reason\"/>\n"
    } else {
        ""
    };
    format!(
        r#"{}<scenario name="uac_expect_{code}">
{}  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="{code}" rtd="true">
{check}  </recv>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-5]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
{reference}</scenario>
"#,
        header(),
        invite("")
    )
}

/// UAC: OPTIONS to holdfast itself. A 200 must list INVITE in Allow, sdp in Accept and
/// timer in Supported; any other expected code is only checked for its status.
pub fn uac_options(expect: u16) -> String {
    let checks = if expect == 200 {
        r#"
    <action>
      <ereg regexp="INVITE" search_in="hdr" header="Allow:" check_it="true" assign_to="allow"/>
      <ereg regexp="application/sdp" search_in="hdr" header="Accept:" check_it="true" assign_to="accept"/>
      <ereg regexp="timer" search_in="hdr" header="Supported:" check_it="true" assign_to="supported"/>
    </action>
  "#
    } else {
        ""
    };
    let reference = if expect == 200 {
        "  <Reference variables=\"allow,accept,supported\"/>\n"
    } else {
        ""
    };
    format!(
        r#"{}<scenario name="uac_options">
  <send retrans="500"><![CDATA[
      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:monitor@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="{expect}" rtd="true">{checks}</recv>
{reference}</scenario>
"#,
        header()
    )
}

fn uas_ok() -> String {
    format!(
        r#"  <send retrans="500"><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      {SDP}
    ]]></send>
"#
    )
}

fn uas_reply(code: u16, reason: &str) -> String {
    format!(
        r#"  <send><![CDATA[
      SIP/2.0 {code} {reason}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]></send>
"#
    )
}

fn uas_plain_ok() -> &'static str {
    r#"  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
"#
}

/// UAS: 180, 200 with SDP, ACK, then the caller's BYE. The INVITE must carry the caller's
/// X-Test-Header (passthrough) and must not carry the caller's Call-ID host (topology hiding
/// is checked by the test on holdfast's side).
pub fn uas_answer() -> String {
    format!(
        r#"{}<scenario name="uas_answer">
  <recv request="INVITE" crlf="true">
    <action><ereg regexp="passthrough-" search_in="hdr" header="X-Test-Header:" check_it="true" assign_to="x"/></action>
  </recv>
{}{}  <recv request="ACK" optional="true" rtd="true" crlf="true"/>
  <recv request="BYE"/>
{}  <Reference variables="x"/>
</scenario>
"#,
        header(),
        uas_reply(180, "Ringing"),
        uas_ok(),
        uas_plain_ok()
    )
}

/// UAS: answers, waits `hold_ms`, then hangs up itself.
pub fn uas_answer_then_bye(hold_ms: u32) -> String {
    format!(
        r#"{}<scenario name="uas_answer_bye">
  <recv request="INVITE" crlf="true" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="local_to"/>
    </action>
  </recv>
{}{}  <recv request="ACK" rtd="true" crlf="true"/>
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: [$local_to];tag=[pid]SIPpTag01[call_number]
      To: [$remote_from]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200"/>
</scenario>
"#,
        header(),
        uas_reply(180, "Ringing"),
        uas_ok()
    )
}

/// UAS: rejects every INVITE with `code` and waits for the ACK.
pub fn uas_reject(code: u16, reason: &str) -> String {
    format!(
        r#"{}<scenario name="uas_reject_{code}">
  <recv request="INVITE" crlf="true"/>
{}  <recv request="ACK" crlf="true"/>
</scenario>
"#,
        header(),
        uas_reply(code, reason)
    )
}

/// UAS: rings and waits for CANCEL; answers 200 to it and 487 to the INVITE.
pub fn uas_ring() -> String {
    format!(
        r#"{}<scenario name="uas_ring">
  <recv request="INVITE" crlf="true"/>
{}  <recv request="CANCEL"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <send><![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: 1 INVITE
      Content-Length: 0

    ]]></send>
  <recv request="ACK" crlf="true"/>
</scenario>
"#,
        header(),
        uas_reply(180, "Ringing")
    )
}

// ---------------------------------------------------------------------------------------
// Media scenarios (tests/media.rs). Their SDP points at an explicit port (a socket the test
// owns) or at SIPp's own media port; what SIPp learns from the far side's SDP goes into its
// -trace_logs file as `KEY=value` lines the test reads while the call is up.

/// An SDP body for `m=audio <port>` on 127.0.0.1 (PCMA + telephone-event), with an optional
/// direction attribute (`sendonly`, `recvonly`, `sendrecv`, `inactive`). `port` is literal
/// text so a scenario can pass a SIPp keyword such as `[auto_media_port]`.
pub fn sdp_at(port: &str, direction: Option<&str>) -> String {
    let dir = direction
        .map(|d| format!("\r\n      a={d}"))
        .unwrap_or_default();
    format!(
        "v=0\r
      o=user1 53655765 2353687637 IN IP4 127.0.0.1\r
      s=-\r
      c=IN IP4 127.0.0.1\r
      t=0 0\r
      m=audio {port} RTP/AVP 8 101\r
      a=rtpmap:8 PCMA/8000\r
      a=rtpmap:101 telephone-event/8000\r
      a=fmtp:101 0-15{dir}"
    )
}

/// Captures the far side's SDP (`c=` address and `m=audio` port) of the message just
/// received and logs it as `<prefix>_ADDR=…` / `<prefix>_PORT=…`.
fn log_sdp(prefix: &str) -> String {
    action(&log_sdp_actions(prefix))
}

fn action(inner: &str) -> String {
    format!("    <action>\n{inner}    </action>\n")
}

/// The actions of [`log_sdp`], to combine with others: SIPp keeps one `<action>` per message.
fn log_sdp_actions(prefix: &str) -> String {
    format!(
        r#"      <ereg regexp="c=IN IP4 ([0-9.]+)" search_in="body" check_it="true" assign_to="{prefix}_c,{prefix}_addr"/>
      <ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true" assign_to="{prefix}_m,{prefix}_port"/>
      <log message="{prefix}_ADDR=[${prefix}_addr]"/>
      <log message="{prefix}_PORT=[${prefix}_port]"/>
      <log message="{prefix}_CALLID=[call_id]"/>
"#
    )
}

/// Logs the direction attribute of the SDP just received as `<prefix>_DIR=…` (`none` when
/// it has none: sendrecv by default, RFC 4566 §6).
fn log_direction(prefix: &str) -> String {
    format!(
        r#"      <ereg regexp="a=(sendrecv|sendonly|recvonly|inactive)" search_in="body" assign_to="{prefix}_a,{prefix}_dir"/>
      <log message="{prefix}_DIR=[${prefix}_dir]"/>
"#
    )
}

fn uac_invite_with(sdp: &str) -> String {
    format!(
        r#"{}  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true">
{}  </recv>
"#,
        invite_with("", sdp),
        log_sdp("ANSWER")
    )
}

fn uac_reinvite(cseq: u32, sdp: &str, check_answer: &str) -> String {
    format!(
        r#"  <send retrans="500"><![CDATA[
      INVITE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      {sdp}
    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="200">
{check_answer}  </recv>
{}"#,
        ack_cseq(cseq)
    )
}

fn ack_cseq(cseq: u32) -> String {
    ack().replace("CSeq: 1 ACK", &format!("CSeq: {cseq} ACK"))
}

/// Waits for the test's wake-up: a `MESSAGE` the test sends to SIPp with this call's
/// Call-ID ([`crate::common::Sipp::poke`]), then logs `<what>` so the test sees it moved on.
fn wait_poke(what: &str) -> String {
    format!(
        r#"  <recv request="MESSAGE" timeout="60000"/>
  <nop><action><log message="POKED={what}"/></action></nop>
"#
    )
}

fn bye_and_ok(cseq: u32) -> String {
    format!(
        "{}  <recv response=\"200\" crlf=\"true\"/>\n",
        in_dialog("BYE", cseq)
    )
}

/// UAC for a real audio call: SDP on SIPp's media port, plays `pcap` (SIPp's
/// play_pcap_audio) once the call is up, then waits for the test's poke and hangs up.
pub fn uac_play_pcap(pcap: &str) -> String {
    format!(
        r#"{}<scenario name="uac_play_pcap">
{}{}  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <nop><action><log message="PLAYING=1"/></action></nop>
{}{}  <Reference variables="ANSWER_c,ANSWER_m"/>
</scenario>
"#,
        header(),
        uac_invite_with(&sdp_at("[auto_media_port]", None)),
        ack(),
        wait_poke("bye"),
        bye_and_ok(2)
    )
}

/// UAC whose SDP points at `media_port` (a socket the test owns): logs holdfast's answer
/// (`ANSWER_PORT=…`), waits for the test's poke, hangs up.
pub fn uac_media_call(media_port: u16) -> String {
    format!(
        r#"{}<scenario name="uac_media_call">
{}{}  <nop><action><log message="CONFIRMED=1"/></action></nop>
{}{}  <Reference variables="ANSWER_c,ANSWER_m"/>
</scenario>
"#,
        header(),
        uac_invite_with(&sdp_at(&media_port.to_string(), None)),
        ack(),
        wait_poke("bye"),
        bye_and_ok(2)
    )
}

/// UAC whose SDP points at `media_port`, then waits for holdfast's BYE (media timeout),
/// whose Reason header must contain `reason`.
pub fn uac_media_wait_bye(media_port: u16, reason: &str) -> String {
    format!(
        r#"{}<scenario name="uac_media_wait_bye">
{}{}  <nop><action><log message="CONFIRMED=1"/></action></nop>
  <recv request="BYE">
{}  </recv>
{}  <Reference variables="ANSWER_c,ANSWER_m,bye_reason"/>
</scenario>
"#,
        header(),
        uac_invite_with(&sdp_at(&media_port.to_string(), None)),
        ack(),
        check_reason(reason),
        uas_plain_ok()
    )
}

fn check_reason(reason: &str) -> String {
    format!(
        r#"    <action><ereg regexp="{reason}" search_in="hdr" header="Reason:" check_it="true" assign_to="bye_reason"/></action>
"#
    )
}

/// UAC: call with SDP at `media_port`; poke → re-INVITE `a=sendonly` (hold; the answer must
/// say `recvonly`) → poke → re-INVITE `a=sendrecv` (unhold) → poke → BYE. Each answer's
/// direction is logged (`HOLD_DIR=…`, `UNHOLD_DIR=…`).
pub fn uac_hold_unhold(media_port: u16) -> String {
    let port = media_port.to_string();
    let hold_check = action(&format!(
        r#"      <ereg regexp="a=recvonly" search_in="body" check_it="true" assign_to="hold_recvonly"/>
{}{}"#,
        log_direction("HOLD"),
        log_sdp_actions("HOLD")
    ));
    let unhold_check = action(&format!(
        "{}{}",
        log_direction("UNHOLD"),
        log_sdp_actions("UNHOLD")
    ));
    format!(
        r#"{}<scenario name="uac_hold_unhold">
{}{}  <nop><action><log message="CONFIRMED=1"/></action></nop>
{}{}  <nop><action><log message="HELD=1"/></action></nop>
{}{}  <nop><action><log message="UNHELD=1"/></action></nop>
{}{}  <Reference variables="ANSWER_c,ANSWER_m,HOLD_c,HOLD_m,HOLD_a,UNHOLD_c,UNHOLD_m,UNHOLD_a,hold_recvonly"/>
</scenario>
"#,
        header(),
        uac_invite_with(&sdp_at(&port, None)),
        ack(),
        wait_poke("hold"),
        uac_reinvite(2, &sdp_at(&port, Some("sendonly")), &hold_check),
        wait_poke("unhold"),
        uac_reinvite(3, &sdp_at(&port, Some("sendrecv")), &unhold_check),
        wait_poke("bye"),
        bye_and_ok(4)
    )
}

/// UAS whose answer points at `media_port` (a socket the test owns); logs the offer holdfast
/// relayed (`OFFER_ADDR=…`, `OFFER_PORT=…`), then waits for the BYE. Any re-INVITE would
/// break the scenario (it has none).
pub fn uas_media_answer(media_port: u16) -> String {
    uas_media_answer_bye(media_port, None)
}

/// [`uas_media_answer`] whose BYE must carry a Reason header containing `bye_reason`.
pub fn uas_media_answer_bye(media_port: u16, bye_reason: Option<&str>) -> String {
    let (check, var) = match bye_reason {
        Some(r) => (check_reason(r), ",bye_reason"),
        None => (String::new(), ""),
    };
    format!(
        r#"{}<scenario name="uas_media_answer">
  <recv request="INVITE" crlf="true">
{}  </recv>
{}  <send retrans="500"><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      {}
    ]]></send>
  <recv request="ACK" rtd="true" crlf="true"/>
  <recv request="BYE">
{check}  </recv>
{}  <Reference variables="OFFER_c,OFFER_m{var}"/>
</scenario>
"#,
        header(),
        log_sdp("OFFER"),
        uas_reply(180, "Ringing"),
        sdp_at(&media_port.to_string(), None),
        uas_plain_ok()
    )
}

/// UAS like [`uas_media_answer`] that also answers OPTIONS outside any call with
/// `options` (status, reason), e.g. a liveness check holdfast sends while the call is up;
/// `None` leaves them unanswered (SIPp without `-aa` drops them).
pub fn uas_media_answer_options(media_port: u16, options: Option<(u16, &str)>) -> String {
    let options_branch = match options {
        Some((code, reason)) => format!(
            r#"  <label id="options"/>
  <send><![CDATA[
      SIP/2.0 {code} {reason}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]opt[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Allow: INVITE, ACK, BYE, CANCEL
      Content-Length: 0

    ]]></send>
"#
        ),
        None => "  <label id=\"options\"/>\n".into(),
    };
    format!(
        r#"{}<scenario name="uas_media_answer_options">
  <recv request="OPTIONS" optional="true" next="options"/>
  <recv request="INVITE" crlf="true"/>
{}  <send retrans="500"><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      {}
    ]]></send>
  <recv request="ACK" rtd="true" crlf="true"/>
  <recv request="BYE"/>
  <send next="done"><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
{options_branch}  <label id="done"/>
</scenario>
"#,
        header(),
        uas_reply(180, "Ringing"),
        sdp_at(&media_port.to_string(), None),
    )
}

/// UAC like [`uac_media_call`] whose INVITE says it allows UPDATE (so holdfast's liveness
/// check of this leg is an UPDATE, which SIPp's `-aa` answers); with `hold`, it puts the
/// call on hold (re-INVITE `a=sendonly`) once confirmed and says nothing more until the
/// test's poke, then hangs up.
pub fn uac_media_call_update(media_port: u16, hold: bool) -> String {
    let port = media_port.to_string();
    let invite = format!(
        r#"{}  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true">
{}  </recv>
"#,
        invite_with(
            "      Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE\n",
            &sdp_at(&port, None)
        ),
        log_sdp("ANSWER")
    );
    let hold = if hold {
        format!(
            "{}  <nop><action><log message=\"HELD=1\"/></action></nop>\n",
            uac_reinvite(2, &sdp_at(&port, Some("sendonly")), "")
        )
    } else {
        String::new()
    };
    let bye_cseq = if hold.is_empty() { 2 } else { 3 };
    format!(
        r#"{}<scenario name="uac_media_call_update">
{invite}{}  <nop><action><log message="CONFIRMED=1"/></action></nop>
{hold}{}{}  <Reference variables="ANSWER_c,ANSWER_m"/>
</scenario>
"#,
        header(),
        ack(),
        wait_poke("bye"),
        bye_and_ok(bye_cseq)
    )
}

/// UAC whose SDP points at `media_port`, for load past a limit: each call is either answered
/// (logs `UP=<Call-ID>`, ACKs, waits for the test's poke, hangs up) or refused with 503
/// (logs `REFUSED=<Reason header>`, ACKs). Any other outcome fails the call.
pub fn uac_call_or_503(media_port: u16) -> String {
    format!(
        r#"{}<scenario name="uac_call_or_503">
{}  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" optional="true" rrs="true" next="up">
    <action><log message="UP=[call_id]"/></action>
  </recv>
  <recv response="503">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Reason:" assign_to="reason"/>
      <log message="REFUSED=[$reason]"/>
    </action>
  </recv>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-5]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <nop next="end"/>
  <label id="up"/>
{}{}{}  <label id="end"/>
  <Reference variables="reason"/>
</scenario>
"#,
        header(),
        invite_with("", &sdp_at(&media_port.to_string(), None)),
        ack(),
        wait_poke("bye"),
        bye_and_ok(2)
    )
}
