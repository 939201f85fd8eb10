#!/usr/bin/env bash
# SIP flood: an INVITE flood from unknown sources and from a known trunk's addresses over
# their rate limit, while CALLS calls with media are up. Measures, on the proxy's SIP port,
# the bytes it sent out against the bytes that came in (reflection / amplification), the
# proxy's CPU during the flood, its log lines, and whether any call was harmed: every call's
# RTP (sent by this harness with its send time in the payload, echoed by the agent, 50 pps)
# must come back, none of it more than 100 ms late (arrival stamped by the kernel, so a
# pause of the harness itself is not counted against the proxy), and every call must end
# normally (SIPp's BYE answered).
#
# usage: benches/sip_flood.sh [RATE=24000] [SECS=10] [CALLS=50] [RUNS=3]
#        STACKS="holdfast kamailio" (default both, in that order, RUNS times)
#        UNKNOWN_SOURCES=drop|reject (holdfast's sip.unknown_sources; default drop)
#        SOURCES="127.0.1.1-20,127.0.2.1-4" (the flood's addresses; 127.0.2.x are known)
#
# Everything runs in a network namespace of its own (its loopback: 127.0.0.0/8), so the
# counters are iptables rules on the proxy's port 5060 that see nothing of the rest of the
# machine. Topology, the same for both stacks (../shared/peers' ports):
#   carrier  SIPp UAC 127.0.0.1:5070 (CALLS calls, SDP pointing at this harness's media
#            sockets, held SECS+14 s, then BYE) → proxy 127.0.0.1:5060 → agent SIPp UAS
#            127.0.0.1:5080 (../shared/peers/scenarios/uas_sdp.xml, -rtp_echo)
#   media    `sip_flood media`: one socket per call (44000+2i), 50 pps to the proxy's port
#            from the answer, echoes counted and timed
#   flood    `sip_flood flood`: RATE new INVITEs per second for SECS seconds, round-robin
#            from 24 addresses: 127.0.1.1-20 (no target's sources) and 127.0.2.1-4 (the
#            sources of carrier `flood-trunk`, `limits: { rate: 10, burst: 20 }`: known,
#            and a hundred times over their limit)
# holdfast: target/release/holdfast, defaults except the targets above (unknown_sources:
# drop, scanners, limits, block_time 60 s), log level info (its log lines are counted).
# Kamailio: ../shared/peers/conf/kamailio.cfg + rtpengine as run-kamailio-rtpengine.sh
# starts them (no pike, no source check: the reference without a guard).
# Bytes are IP datagrams (UDP payload + 28) counted by the namespace's iptables, from the
# flood's first packet to 40 s later (past RFC 3261's 32 s of retransmissions of whatever
# the proxy answered). Every load is bounded (SIPp -m/-timeout, sip_flood --secs); every
# process is stopped by its PID; the namespace is deleted on exit.
# Needs root, sip-tester, iptables, python3, bc; Kamailio's run also kamailio and
# rtpengine-daemon (see ../shared/peers/README.md).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=${PEERS:-$ROOT/../shared/peers}
RATE=${1:-24000}; SECS=${2:-10}; CALLS=${3:-50}; RUNS=${4:-3}
STACKS=${STACKS:-"holdfast kamailio"}
UNKNOWN_SOURCES=${UNKNOWN_SOURCES:-drop}
SOURCES=${SOURCES:-127.0.1.1-20,127.0.2.1-4}
OUT=${OUT:-$(mktemp -d -t holdfast-flood-XXXX)}; mkdir -p "$OUT"
TCK=$(getconf CLK_TCK)
[ "$(id -u)" = 0 ] || { echo "needs root: a network namespace and iptables counters" >&2; exit 1; }
[ "$CALLS" -le 500 ] && [ "$SECS" -le 60 ] || { echo "CALLS <= 500, SECS <= 60" >&2; exit 1; }
cargo build --release -q || exit 1
BIN=$ROOT/target/release/holdfast
SF=$(cargo build --release -q --bench sip_flood --message-format=json 2>/dev/null | python3 -c '
import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "sip_flood" and m.get("executable"):
        print(m["executable"])')
[ -x "$SF" ] || { echo "could not build benches/sip_flood.rs" >&2; exit 1; }

NS=hf-flood-$$
PIDS=()
stopall(){ for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done; PIDS=(); }
cleanup(){ stopall; ip netns del "$NS" 2>/dev/null; }
trap cleanup EXIT
ip netns add "$NS" || exit 1
nsx(){ ip netns exec "$NS" "$@"; }
nsx ip link set lo up
nsx iptables -A INPUT -p udp --dport 5060 || exit 1
nsx iptables -A OUTPUT -p udp --sport 5060 || exit 1
# "pkts bytes" of the rule counting datagrams to (in) or from (out) port 5060.
count_in(){ nsx iptables -L INPUT -v -x -n | awk '/dpt:5060/ {print $1, $2; exit}'; }
count_out(){ nsx iptables -L OUTPUT -v -x -n | awk '/spt:5060/ {print $1, $2; exit}'; }
ticks(){ local t=0 p; for p in "$@"; do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
rcvbuf_errors(){ nsx awk '/^Udp: [0-9]/ {print $6; exit}' /proc/net/snmp; }
wait_for(){ # file pattern seconds
  local i; for i in $(seq 1 $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

HOLD_MS=$(( (SECS + 14) * 1000 ))
BUDGET=$(( SECS + 90 ))
# The carrier: ../shared/peers' uac_pcap_rr (record-route aware) with the SDP pointing at
# the harness's socket for the call ([field0]) and no pcap; logs the proxy's media port.
sed -e 's/m=audio \[auto_media_port\]/m=audio [field0]/' \
    -e '/play_pcap_audio/d' \
    -e "s/<pause milliseconds=\"8000\"\/>/<pause milliseconds=\"$HOLD_MS\"\/>/" \
    -e 's|<recv response="200" rtd="true" rrs="true"/>|<recv response="200" rtd="true" rrs="true"><action><ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true" assign_to="m,port"/><log message="MAP [field0] [$port]"/></action></recv>|' \
    "$PEERS/scenarios/uac_pcap_rr.xml" > "$OUT/carrier.xml"
grep -q 'MAP \[field0\]' "$OUT/carrier.xml" && grep -q "m=audio \[field0\]" "$OUT/carrier.xml" \
  || { echo "could not write the carrier scenario" >&2; exit 1; }
sed -i 's|<ResponseTimeRepartition|<Reference variables="m"/>\n  <ResponseTimeRepartition|' "$OUT/carrier.xml"

cat > "$OUT/holdfast.yaml" <<YAML
# sip_flood.sh: the carrier trunk's calls go to one SIP agent; flood-trunk's addresses are
# known, with a small trunk's contract (10 calls per second); everything else is unknown.
sip:
  listen: ["udp:127.0.0.1:5060"]
  unknown_sources: $UNKNOWN_SOURCES
media:
  ports: 20000-29999
  ai_timeout: 10s                # the harness's RTP starts a moment after the answer
health: { ping_interval: 1h }
admin: { listen: "127.0.0.1:9090" }
carriers:
  - { id: trunk, uri: "sip:127.0.0.1:5070", region: local, ping: false, sources: ["127.0.0.1:5070"] }
  - { id: flood-trunk, uri: "sip:127.0.2.1:5060", region: local, ping: false, sources: ["127.0.2.0/24"], limits: { rate: 10, burst: 20 } }
ai_providers:
  - { id: agent, kind: sip, uri: "sip:agent@127.0.0.1:5080", region: local, ping: false }
routes:
  inbound:
    - { regions: [local], ai: [agent] }
YAML
nsx "$BIN" check "$OUT/holdfast.yaml" > "$OUT/check.txt" || { cat "$OUT/check.txt"; exit 1; }

start_holdfast(){ # dir → PROXY_PIDS
  # `ip netns exec` execs the command, so $! is the proxy's own PID (its CPU ticks).
  ip netns exec "$NS" "$BIN" --log-format json --log-level info run --config "$OUT/holdfast.yaml" > "$1/proxy.log" 2>&1 &
  local p=$!; PIDS+=($p); PROXY_PIDS="$p"
  wait_for "$1/proxy.log" "holdfast is up" 10 || { echo "holdfast did not start" >&2; cat "$1/proxy.log"; return 1; }
}
start_kamailio(){ # dir → PROXY_PIDS
  ip netns exec "$NS" rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng=127.0.0.1:2223 --listen-cli=127.0.0.1:9900 \
    --port-min=30000 --port-max=40000 --foreground --log-stderr --log-level=4 --num-threads=2 --timeout=60 \
    > "$1/rtpengine.log" 2>&1 & local r=$!; PIDS+=($r)
  local i; for i in $(seq 1 20); do nsx python3 "$PEERS/tools/ng.py" ping >/dev/null 2>&1 && break; sleep 0.25; done
  ip netns exec "$NS" kamailio -f "$PEERS/conf/kamailio.cfg" -DD -E > "$1/proxy.log" 2>&1 & local k=$!; PIDS+=($k)
  sleep 1.5
  PROXY_PIDS="$k $(cat /proc/$k/task/*/children 2>/dev/null) $r"
}

run(){ # stack run
  local stack=$1 dir=$OUT/$1-$2; mkdir -p "$dir"
  nsx iptables -Z
  "start_$stack" "$dir" || return 1
  (cd "$dir" && exec ip netns exec "$NS" sipp -sf "$PEERS/scenarios/uas_sdp.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 16000 \
     -rtp_echo -nostdin -timeout "$BUDGET" -trace_err > agent.out 2>&1) & PIDS+=($!)
  sleep 0.5
  local msecs=$((SECS + 9))
  ip netns exec "$NS" "$SF" media --csv "$dir/ports.csv" --base 44000 --calls "$CALLS" --map "$dir/carrier_logs.log" --secs "$msecs" \
     > "$dir/media.out" 2>&1 & local MPID=$!; PIDS+=($MPID)
  wait_for "$dir/ports.csv" SEQUENTIAL 10 || { echo "media sockets not bound" >&2; return 1; }
  (cd "$dir" && exec ip netns exec "$NS" sipp 127.0.0.1:5060 -sf "$OUT/carrier.xml" -inf "$dir/ports.csv" -i 127.0.0.1 -p 5070 \
     -mi 127.0.0.1 -r "$CALLS" -l "$CALLS" -m "$CALLS" -nostdin -timeout "$BUDGET" -timeout_error \
     -trace_logs -log_file "$dir/carrier_logs.log" -trace_stat -stf "$dir/carrier_stat.csv" -trace_err > carrier.out 2>&1) &
  local UPID=$!; PIDS+=($UPID)
  wait_for "$dir/media.out" streaming 60 || { echo "$stack: the calls never came up" >&2; cat "$dir/media.out"; return 1; }
  sleep 3
  local in0 out0 c0 t0 l0 e0 in1 out1 c1 t1 l1 e1 inz outz
  in0=$(count_in); out0=$(count_out); c0=$(ticks $PROXY_PIDS); l0=$(wc -l < "$dir/proxy.log"); e0=$(rcvbuf_errors)
  t0=$(date +%s.%N)
  nsx "$SF" flood --to 127.0.0.1:5060 --sources "$SOURCES" --rate "$RATE" --secs "$SECS" > "$dir/flood.out" 2>&1
  t1=$(date +%s.%N)
  in1=$(count_in); out1=$(count_out); c1=$(ticks $PROXY_PIDS); l1=$(wc -l < "$dir/proxy.log"); e1=$(rcvbuf_errors)
  wait "$MPID"
  # 40 s after the flood started (its answers' retransmissions are over), then the calls end.
  local left; left=$(echo "40 - ($(date +%s.%N) - $t0)" | bc -l)
  [ "${left%%.*}" -gt 0 ] 2>/dev/null && sleep "$left"
  inz=$(count_in); outz=$(count_out)
  wait "$UPID"; local urc=$?
  local metrics=""
  [ "$stack" = holdfast ] && metrics=$(nsx python3 -c 'import urllib.request;print(urllib.request.urlopen("http://127.0.0.1:9090/metrics",timeout=5).read().decode())' 2>/dev/null \
     | grep -E '^holdfast_sip_(dropped|rejected)_total|^holdfast_sip_sources_blocked|^holdfast_calls_total' | tr '\n' ' ')
  stopall
  local el; el=$(echo "$t1 - $t0" | bc -l)
  python3 - "$stack" "$dir" "$el" "$in0 $in1 $inz" "$out0 $out1 $outz" "$c0 $c1" "$TCK" "$l0 $l1" "$e0 $e1" "$urc" "$metrics" <<'PY' | tee "$dir/summary.txt"
import re, sys
stack, d, el = sys.argv[1], sys.argv[2], float(sys.argv[3])
ins, outs = [int(x) for x in sys.argv[4].split()], [int(x) for x in sys.argv[5].split()]
c0, c1 = [int(x) for x in sys.argv[6].split()]; tck = int(sys.argv[7])
l0, l1 = [int(x) for x in sys.argv[8].split()]; e0, e1 = [int(x) for x in sys.argv[9].split()]
urc, metrics = sys.argv[10], sys.argv[11]
# ins/outs: pkts0 bytes0 pkts1 bytes1 pktsZ bytesZ
flood = dict(re.findall(r"(\w+)=([0-9.]+)", open(f"{d}/flood.out").read()))
media = dict(re.findall(r"(\w+)=([0-9.]+)", open(f"{d}/media.out").read()))
ok = failed = "?"
try:
    rows = open(f"{d}/carrier_stat.csv").read().splitlines()
    hdr, last = rows[0].split(";"), rows[-1].split(";")
    ok, failed = last[hdr.index("SuccessfulCall(C)")], last[hdr.index("FailedCall(C)")]
except Exception:
    pass
bin_w, bout_w = ins[3] - ins[1], outs[3] - outs[1]
bin_z, bout_z = ins[5] - ins[1], outs[5] - outs[1]
print(f"== {stack}: flood_sent={flood.get('sent','?')} flood_rate={flood.get('rate','?')} invite_bytes={flood.get('size','?')} flood_secs={el:.1f}")
print(f"bytes_in={bin_w} bytes_out={bout_w} out_per_in={bout_w/max(bin_w,1):.5f} (flood window)")
print(f"bytes_in_40s={bin_z} bytes_out_40s={bout_z} out_per_in_40s={bout_z/max(bin_z,1):.5f} pkts_in_40s={ins[4]-ins[0]} pkts_out_40s={outs[4]-outs[0]}")
print(f"cpu_pct={100*(c1-c0)/tck/el:.1f} (proxy processes, 100 = one core) log_lines={l1-l0} kernel_rcvbuf_drops={e1-e0} (every UDP socket in the namespace)")
print(f"calls_ok={ok} calls_failed={failed} carrier_rc={urc}")
print("media: " + " ".join(f"{k}={v}" for k, v in media.items()))
if metrics:
    dropped = sum(float(v) for v in re.findall(r'holdfast_sip_dropped_total\{[^}]*\} ([0-9.e+]+)', metrics))
    print(f"guard_dropped={dropped:.0f} (of the flood's {flood.get('sent','?')}; the rest were admitted or lost in the kernel)")
    print("metrics: " + metrics)
PY
}

for i in $(seq 1 "$RUNS"); do
  for s in $STACKS; do
    echo "### run $i/$RUNS: $s"
    run "$s" "$i"
  done
done

echo
echo "### medians over $RUNS runs (RATE=$RATE SECS=$SECS CALLS=$CALLS SOURCES=$SOURCES holdfast unknown_sources=$UNKNOWN_SOURCES)"
python3 - "$OUT" $STACKS <<'PY'
import glob, re, statistics as st, sys
out, stacks = sys.argv[1], sys.argv[2:]
def num(t, k):
    m = re.search(r"\b" + k + r"=([0-9.]+)", t)
    return float(m.group(1)) if m else float("nan")
keys = ["flood_rate", "out_per_in", "out_per_in_40s", "cpu_pct", "log_lines", "kernel_rcvbuf_drops",
        "calls_ok", "calls_failed", "lost", "rtt_p99_ms", "rtt_max_ms", "calls_rtt_over_100ms", "max_gap_ms", "max_send_gap_ms"]
print("| stack | flood INVITE/s | out/in (flood) | out/in (40 s) | CPU % of a core | log lines | kernel UDP drops | calls ok / failed | RTP lost | RTP round trip p99 / max ms | calls with a packet > 100 ms late | longest RTP silence ms | harness's own longest pause ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for s in stacks:
    rows = []
    for f in sorted(glob.glob(f"{out}/{s}-*/summary.txt")):
        t = open(f).read()
        rows.append({k: num(t, k) for k in keys})
    if not rows:
        continue
    m = {k: st.median(r[k] for r in rows) for k in keys}
    print(f"| {s} | {m['flood_rate']:.0f} | {m['out_per_in']:.4f} | {m['out_per_in_40s']:.4f} | {m['cpu_pct']:.1f} | {m['log_lines']:.0f} | {m['kernel_rcvbuf_drops']:.0f} | {m['calls_ok']:.0f} / {m['calls_failed']:.0f} | {m['lost']:.0f} | {m['rtt_p99_ms']:.1f} / {m['rtt_max_ms']:.1f} | {m['calls_rtt_over_100ms']:.0f} | {m['max_gap_ms']:.1f} | {m['max_send_gap_ms']:.1f} |")
PY
echo "(raw runs in $OUT)"
