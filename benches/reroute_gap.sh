#!/usr/bin/env bash
# Re-route gap: how long a caller hears nothing when its AI agent dies mid-call and holdfast
# moves the call to the next agent. Measured by holdfast at the carrier side: the last AI
# audio relayed to the carrier → the first audio of the new agent relayed to it (the
# "AI audio resumed after re-route" log line's gap_ms), and the re-route's setup time
# (trigger → new agent's 200 OK, setup_ms). p50/p99 per trigger kind.
#
# usage: benches/reroute_gap.sh [CALLS=200] [CONCURRENT=10] [TRIGGERS="bye media_unreachable liveness websocket"]
#
# Topology (all 127.0.0.1): SIPp carrier (UAC, ../shared/peers' uac_pcap_rr scenario: plays
# SIPp's G.711 recording, 50 pps) → holdfast → agent-a (SIPp UAS; its media is a per-call
# echo socket of this script) and agent-b (SIPp UAS with -rtp_echo). Each call's agent-a
# dies 1 s into the call, by trigger kind:
#   bye                agent-a's SIPp sends BYE with Reason: SIP;cause=503 (its echo goes on);
#   media_unreachable  agent-a's echo socket for that call closes (ICMP port unreachable);
#   liveness           agent-a lost that call (a restart): its echo falls silent, and after
#                      media.ai_timeout (1 s here) holdfast's in-dialog OPTIONS check gets
#                      481 (agent-a's `liveness: in-dialog-options`); silence alone never
#                      re-routes;
#   websocket          the agents are media-stream bots (Python, Twilio protocol, echoing the
#                      caller): bot-a drops each call's connection (no close frame) 1 s in,
#                      bot-b takes over.
# Every load is bounded by SIPp's -m and -timeout; processes are stopped by PID.
# Needs: sip-tester, python3 (and the `websockets` package for the websocket trigger; installed
# with pip --user when missing).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=${PEERS:-$ROOT/../shared/peers}
CALLS=${1:-200}; CONC=${2:-10}; TRIGGERS=${3:-"bye media_unreachable liveness websocket"}
OUT=${OUT:-$(mktemp -d -t holdfast-reroute-XXXX)}; mkdir -p "$OUT"
cargo build --release -q || exit 1
BIN=$ROOT/target/release/holdfast
PCAP=/usr/share/sip-tester/g711a.pcap

PIDS=()
stopall(){ for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done; PIDS=(); }
trap stopall EXIT

# Ports: fixed, loopback; holdfast 5260, carrier 5270, agent-a 5281, agent-b 5282.
cat > "$OUT/holdfast.yaml" <<YAML
sip:
  listen: ["udp:127.0.0.1:5260"]
media:
  ports: 12000-15999
  ai_timeout: 1s
health: { ping_interval: 1h }
carriers:
  - { id: carrier, uri: "sip:127.0.0.1:5270", region: local, ping: false, sources: ["127.0.0.1:5270"] }
ai_providers:
  - { id: agent-a, kind: sip, uri: "sip:agent@127.0.0.1:5281", region: local, priority: 1, ping: false, liveness: in-dialog-options }
  - { id: agent-b, kind: sip, uri: "sip:agent@127.0.0.1:5282", region: local, priority: 2, ping: false }
routes:
  inbound:
    - { regions: [local], ai: [agent-a, agent-b] }
YAML
# agent-a's breaker must not open (every call fails it on purpose): it would skip agent-a.
sed -i 's/health: { ping_interval: 1h }/health: { ping_interval: 1h, breaker: { failures: 1000, window: 1s } }/' "$OUT/holdfast.yaml"

# The carrier: the shared UAC scenario, hanging up after 5 s (the recording is 4.7 s; a
# longer hold would let agent-b's echo fall silent and re-route again).
sed 's/<pause milliseconds="8000"\/>/<pause milliseconds="5000"\/>/' "$PEERS/scenarios/uac_pcap_rr.xml" > "$OUT/carrier.xml"
grep -q 'milliseconds="5000"' "$OUT/carrier.xml" || { echo "could not shorten the carrier's hold" >&2; exit 1; }

# agent-a: answers with SDP on the call's echo port ([field0] of the injection file), then
# either sends BYE with an error cause after 1 s, or (liveness) answers holdfast's in-dialog
# OPTIONS 481 as an agent that lost the call would, or waits for holdfast's BYE.
agent_a_scenario() {
  local fail capture='  <recv request="INVITE"/>'
  if [ "$1" = bye ]; then
    capture='  <recv request="INVITE">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="to0"/>
      <assignstr assign_to="to" value="[$to0];tag=[pid]A[call_number]"/>
    </action>
  </recv>'
    fail='  <pause milliseconds="1000"/>
  <send retrans="500"><![CDATA[
      BYE sip:holdfast@127.0.0.1:5260 SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$to]
      To: [$from]
      [last_Call-ID:]
      CSeq: 2 BYE
      Reason: SIP;cause=503;text="model overloaded"
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <recv response="200"/>'
  else
    [ "$1" = liveness ] && fail='  <recv request="OPTIONS"/>
  <send><![CDATA[
      SIP/2.0 481 Call/Transaction Does Not Exist
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]></send>
' || fail=''
    fail=$fail'  <recv request="BYE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]></send>'
  fi
  cat <<XML
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent_a_$1">
$capture
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]A[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:agent@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=agent 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio [field0] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
    ]]></send>
  <recv request="ACK"/>
$fail
</scenario>
XML
}

# agent-a's media: one echo socket per call; each echoes its first 50 packets (1 s), then
# echoes on (bye), closes (media_unreachable) or falls silent (liveness).
echo_py() {
  cat <<'PY'
import os, select, socket, sys, time
mode, n, csv, deadline = sys.argv[1], int(sys.argv[2]), sys.argv[3], time.time() + float(sys.argv[4])
socks = []
for i in range(n):  # fixed ports below the kernel's ephemeral range, clear of holdfast's
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 8000 + i)); s.setblocking(False)
    socks.append(s)
with open(csv + ".tmp", "w") as f:
    f.write("SEQUENTIAL\n" + "".join(f"{s.getsockname()[1]}\n" for s in socks))
os.rename(csv + ".tmp", csv)
count = {s: 0 for s in socks}
live = set(socks)
while live and time.time() < deadline:
    r, _, _ = select.select(list(live), [], [], 0.5)
    for s in r:
        try:
            data, src = s.recvfrom(2048)
        except OSError:
            continue
        count[s] += 1
        if count[s] <= 50 or mode == "bye":
            s.sendto(data, src)
        elif mode == "media_unreachable":
            live.discard(s); s.close()
PY
}

# A media-stream bot: echoes the caller's audio; with `drop`, aborts each connection (no close
# frame) after 50 media messages (1 s).
bot_py() {
  cat <<'PY'
import asyncio, json, sys
import websockets
port, mode, deadline = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
async def handle(ws):
    sid, n = None, 0
    async for raw in ws:
        m = json.loads(raw)
        if m.get("event") == "start":
            sid = m.get("streamSid")
        elif m.get("event") == "media":
            n += 1
            if mode == "drop" and n > 50:
                ws.transport.abort()
                return
            await ws.send(json.dumps({"event": "media", "streamSid": sid,
                                      "media": {"payload": m["media"]["payload"]}}))
async def main():
    async with websockets.serve(handle, "127.0.0.1", port):
        await asyncio.sleep(deadline)
asyncio.run(main())
PY
}

run_ws() {
  local dir=$OUT/websocket budget=$1; mkdir -p "$dir"
  python3 -c "import websockets" 2>/dev/null || python3 -m pip install --user -q websockets || return 1
  sed -e 's/- { id: agent-a, kind: sip, uri: "sip:agent@127.0.0.1:5281"/- { id: agent-a, kind: media-stream, url: "ws:\/\/127.0.0.1:5291\/"/' \
      -e 's/- { id: agent-b, kind: sip, uri: "sip:agent@127.0.0.1:5282"/- { id: agent-b, kind: media-stream, url: "ws:\/\/127.0.0.1:5292\/"/' \
      -e 's/, liveness: in-dialog-options//' \
      "$OUT/holdfast.yaml" > "$dir/holdfast.yaml"
  grep -q 5292 "$dir/holdfast.yaml" || { echo "could not write the websocket config" >&2; return 1; }
  bot_py > "$dir/bot.py"
  python3 "$dir/bot.py" 5291 drop "$budget" > "$dir/bot_a.out" 2>&1 & PIDS+=($!)
  python3 "$dir/bot.py" 5292 echo "$budget" > "$dir/bot_b.out" 2>&1 & PIDS+=($!)
  sleep 1
  "$BIN" --log-format json run --config "$dir/holdfast.yaml" > "$dir/holdfast.log" 2>&1 & PIDS+=($!)
  sleep 1
  local rc
  (cd "$dir" && sipp 127.0.0.1:5260 -sf "$OUT/carrier.xml" -i 127.0.0.1 -p 5270 -mi 127.0.0.1 -mp 48000 \
     -r "$CONC" -rp 6000 -l "$CONC" -m "$CALLS" -nostdin -timeout "$budget" -timeout_error \
     -trace_stat -stf carrier_stat.csv -trace_err > carrier.out 2>&1); rc=$?
  sleep 1.5
  stopall
  echo "== websocket: carrier SIPp rc=$rc" | tee "$dir/summary.txt"
}

run() {
  local trig=$1 dir=$OUT/$1; mkdir -p "$dir"
  local budget=$((CALLS * 6 / CONC + 120))
  [ "$trig" = websocket ] && { run_ws "$budget"; return; }
  agent_a_scenario "$trig" > "$dir/agent_a.xml"
  echo_py > "$dir/echo.py"
  python3 "$dir/echo.py" "$trig" "$CALLS" "$dir/ports.csv" "$budget" & PIDS+=($!)
  for _ in $(seq 1 50); do [ -s "$dir/ports.csv" ] && break; sleep 0.1; done
  "$BIN" --log-format json run --config "$OUT/holdfast.yaml" > "$dir/holdfast.log" 2>&1 & PIDS+=($!)
  (cd "$dir" && exec sipp -sf agent_a.xml -inf ports.csv -i 127.0.0.1 -p 5281 -m "$CALLS" -nostdin \
     -timeout "$budget" -trace_err > agent_a.out 2>&1) & PIDS+=($!)
  (cd "$dir" && exec sipp -sf "$PEERS/scenarios/uas_sdp.xml" -i 127.0.0.1 -p 5282 -mi 127.0.0.1 -mp 46000 \
     -rtp_echo -nostdin -timeout "$budget" -trace_err > agent_b.out 2>&1) & PIDS+=($!)
  sleep 1
  local rc
  (cd "$dir" && sipp 127.0.0.1:5260 -sf "$OUT/carrier.xml" -i 127.0.0.1 -p 5270 -mi 127.0.0.1 -mp 48000 \
     -r "$CONC" -rp 6000 -l "$CONC" -m "$CALLS" -nostdin -timeout "$budget" -timeout_error \
     -trace_stat -stf carrier_stat.csv -trace_err > carrier.out 2>&1); rc=$?
  sleep 1.5
  stopall
  echo "== $trig: carrier SIPp rc=$rc" | tee "$dir/summary.txt"
}

for t in $TRIGGERS; do run "$t"; done

python3 - "$OUT" $TRIGGERS <<'PY' | tee "$OUT/figures.txt"
import json, sys, statistics as st
out, triggers = sys.argv[1], sys.argv[2:]
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")
print("| trigger | calls | re-routed | resumed | gap p50 ms | gap p99 ms | setup p50 ms | setup p99 ms | carrier calls failed |")
print("|---|---|---|---|---|---|---|---|---|")
for t in triggers:
    rer, gaps, setups = 0, [], []
    for line in open(f"{out}/{t}/holdfast.log", errors="replace"):
        try:
            l = json.loads(line)
        except ValueError:
            continue
        f = {**l, **l.get("fields", {})}
        m = f.get("message", "")
        if m == "AI leg re-routed":
            rer += 1
        elif m == "AI audio resumed after re-route" and f.get("gap_ms") is not None:
            gaps.append(f["gap_ms"]); setups.append(f.get("setup_ms") or 0)
    failed = created = "?"
    try:
        rows = open(f"{out}/{t}/carrier_stat.csv").read().splitlines()
        hdr, last = rows[0].split(";"), rows[-1].split(";")
        failed, created = last[hdr.index("FailedCall(C)")], last[hdr.index("TotalCallCreated")]
    except Exception:
        pass
    print(f"| {t} | {created} | {rer} | {len(gaps)} | {pct(gaps,50)} | {pct(gaps,99)} | {pct(setups,50)} | {pct(setups,99)} | {failed} |")
PY
echo "(raw runs in $OUT)"
