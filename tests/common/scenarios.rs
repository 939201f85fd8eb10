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

      {SDP}
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
