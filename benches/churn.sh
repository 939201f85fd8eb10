#!/usr/bin/env bash
# Call churn: does holdfast give memory and descriptors back when calls end?
#
# usage: benches/churn.sh [CPS=30] [CHURN_S=900] [QUIET_S=180] [SAMPLE_S=5]
#
# SIPp, as the carrier, places inbound calls through holdfast at CPS calls/s for CHURN_S
# seconds; each call is ../shared/peers' UAC scenario (INVITE with SDP, 8 s hold, BYE) with
# the same G.711 recording sent by SIPp's rtp_stream (50 pps from a bound socket, so the echo
# has somewhere to go: pcap playback sends from a raw socket, and holdfast rightly takes the
# ICMP port unreachable that the echo would draw for a dead leg), and the AI agent, a SIPp
# UAS, echoes it back (-rtp_echo): about CPS x 8 calls up at any time, media both ways.
# Then QUIET_S seconds with no calls. Every SAMPLE_S seconds from start to end it records
# holdfast's RSS and high-water mark (/proc/PID/status), its open descriptors
# (/proc/PID/fd) and, from the admin API, holdfast_calls_active, process_open_fds,
# holdfast_media_relays_open, holdfast_media_ports_in_use and the calls ended so far
# (holdfast_calls_total), in $OUT/samples.csv (each sample's whole /metrics in $OUT/metrics/); then it summarises them: start, peak, end of
# churn, end of the quiet tail, and the growth per 1000 calls over the second half of the
# churn (a leak keeps growing there; an allocator keeping freed memory plateaus).
#
# Topology, on loopback addresses of its own so it never collides with benches/sip_load.sh
# (127.0.0.1): SIPp UAC 127.0.0.62:5070 (the carrier) → holdfast 127.0.0.61:5060 (admin
# :9090, relays on .61, call records on) → SIPp UAS 127.0.0.63:5080 (the AI agent).
# Bounded: SIPp -m CPS*CHURN_S and -timeout; every process is stopped by PID.
# HOLDFAST_BIN runs another build (before/after comparisons); HOLDFAST_LOG is its log filter
# (default warn). Needs: sip-tester, curl, python3, bc.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=${PEERS:-$ROOT/../shared/peers}
CPS=${1:-30}; CHURN_S=${2:-900}; QUIET_S=${3:-180}; SAMPLE_S=${4:-5}
M=$((CPS * CHURN_S))
OUT=${OUT:-$(mktemp -d -t holdfast-churn-XXXX)}; mkdir -p "$OUT/metrics"
HF_IP=127.0.0.61; UAC_IP=127.0.0.62; UAS_IP=127.0.0.63; ADMIN=$HF_IP:9090
if [ -z "${HOLDFAST_BIN:-}" ]; then
  cargo build --release -q || exit 1
  HOLDFAST_BIN=$ROOT/target/release/holdfast
fi

PIDS=()
stopall(){ for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done; PIDS=(); }
trap stopall EXIT

cat > "$OUT/holdfast.yaml" <<YAML
# benches/churn.sh: SIPp UAC $UAC_IP:5070 (carrier) → holdfast $HF_IP:5060 → SIPp UAS $UAS_IP:5080 (AI agent)
sip:
  listen: ["udp:$HF_IP:5060"]
media:
  bind: $HF_IP
carriers:
  - { id: carrier, uri: "sip:$UAC_IP:5070", region: local, ping: false, sources: ["$UAC_IP:5070"] }
ai_providers:
  - { id: agent, kind: sip, uri: "sip:agent@$UAS_IP:5080", region: local, ping: false }
routes:
  inbound:
    - { regions: [local], ai: [agent] }
admin:
  listen: $ADMIN
records:
  path: $OUT/records.jsonl
YAML

# The carrier's audio: the A-law payload of the shared recording's 236 packets, which
# rtp_stream loops for the call's 8 s.
python3 - /usr/share/sip-tester/g711a.pcap "$OUT/g711a.alaw" <<'EOF' || exit 1
import struct, sys
d = open(sys.argv[1], "rb").read(); off = 24; out = bytearray()
assert struct.unpack("<I", d[:4])[0] == 0xa1b2c3d4 and struct.unpack("<I", d[20:24])[0] == 1  # LE pcap, Ethernet
while off + 16 <= len(d):
    n = struct.unpack("<I", d[off + 8:off + 12])[0]; pkt = d[off + 16:off + 16 + n]; off += 16 + n
    ip = pkt[14:]; rtp = ip[(ip[0] & 15) * 4 + 8:]
    out += rtp[12 + 4 * (rtp[0] & 15):]
open(sys.argv[2], "wb").write(out)
EOF
UAC_SF=$OUT/uac_rtp_stream.xml
sed -e "s#<exec play_pcap_audio=\"/usr/share/sip-tester/g711a.pcap\"/>#<exec rtp_stream=\"$OUT/g711a.alaw,-1,8\"/>#" \
  "$PEERS/scenarios/uac_pcap_rr.xml" > "$UAC_SF"
grep -q rtp_stream "$UAC_SF" || { echo "could not put rtp_stream into the scenario" >&2; exit 1; }

"$HOLDFAST_BIN" --log-level "${HOLDFAST_LOG:-warn}" run --config "$OUT/holdfast.yaml" > "$OUT/holdfast.log" 2>&1 &
HPID=$!; PIDS+=($HPID)
for _ in $(seq 1 50); do curl -sf "http://$ADMIN/live" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf "http://$ADMIN/live" >/dev/null || { echo "holdfast did not start:" >&2; cat "$OUT/holdfast.log" >&2; exit 1; }

metric(){ # the sum of a family's samples in $METRICS whose labels contain $2
  awk -v n="$1" -v f="${2:-}" '$1 ~ "^"n"({|$)" && index($1, f) { s += $NF } END { printf "%d", s }' <<<"$METRICS"; }
sample(){ # phase
  local now rss hwm anon fds thr
  [ -r /proc/$HPID/status ] || return 1
  now=$(date +%s.%N)
  rss=$(awk '/^VmRSS:/ {print $2}' /proc/$HPID/status); hwm=$(awk '/^VmHWM:/ {print $2}' /proc/$HPID/status)
  anon=$(awk '/^RssAnon:/ {print $2}' /proc/$HPID/status); thr=$(awk '/^Threads:/ {print $2}' /proc/$HPID/status)
  fds=$(ls /proc/$HPID/fd 2>/dev/null | wc -l)
  METRICS=$(curl -s --max-time 2 "http://$ADMIN/metrics")
  printf '%s\n' "$METRICS" > "$OUT/metrics/$(printf '%08.1f' "$(echo "$now - $T0" | bc -l)").txt"
  echo "$(printf '%.1f' "$(echo "$now - $T0" | bc -l)"),$1,$rss,$hwm,$anon,$fds,$thr,$(metric holdfast_calls_active),$(metric process_open_fds),$(metric holdfast_media_relays_open),$(metric holdfast_media_ports_in_use),$(metric holdfast_calls_total),$(metric holdfast_calls_total 'outcome="completed"')" >> "$OUT/samples.csv"
}
sample_until(){ # phase (until SIPp's UAC exits | until this epoch second)
  local phase=$1 end=$2
  while :; do
    sample "$phase" || return 1
    if [ "$end" = sipp ]; then kill -0 "$CPID" 2>/dev/null || return 0
    elif (( $(date +%s) >= end )); then return 0; fi
    sleep "$SAMPLE_S"
  done
}

echo "t_s,phase,rss_kb,hwm_kb,rss_anon_kb,fds,threads,calls_active,process_open_fds,relays_open,ports_in_use,calls_ended,calls_completed" > "$OUT/samples.csv"
T0=$(date +%s.%N)
sample_until idle $(( $(date +%s) + 3 * SAMPLE_S ))

(cd "$OUT" && exec sipp -sf "$PEERS/scenarios/uas_sdp.xml" -i $UAS_IP -p 5080 -mi $UAS_IP -mp 16000 -rtp_echo -nostdin \
   -timeout $((CHURN_S + 180)) -trace_err > uas.out 2>&1) & UPID=$!; PIDS+=($UPID)
sleep 1
(cd "$OUT" && exec sipp $HF_IP:5060 -sf "$UAC_SF" -i $UAC_IP -p 5070 -mi $UAC_IP -mp 20000 \
   -r "$CPS" -l $((CPS * 30)) -m "$M" -nostdin -timeout $((CHURN_S + 120)) -timeout_error \
   -trace_stat -stf uac_stat.csv -fd 10 -trace_err > uac.out 2>&1) & CPID=$!; PIDS+=($CPID)
sample_until churn sipp
wait "$CPID"; UAC_RC=$?
kill "$UPID" 2>/dev/null
sample_until quiet $(( $(date +%s) + QUIET_S ))
curl -s "http://$ADMIN/metrics" > "$OUT/metrics-end.txt"
cp /proc/$HPID/status "$OUT/status-end.txt" 2>/dev/null
stopall

{
echo "== holdfast churn  cps=$CPS churn=${CHURN_S}s quiet=${QUIET_S}s (uac rc=$UAC_RC; $OUT)"
python3 "$PEERS/tools/sippstats.py" "$OUT/uac_stat.csv" /dev/null 2>/dev/null | head -1
python3 "$ROOT/benches/sipp_failures.py" "calls through holdfast" "$OUT"
grep -E '^holdfast_calls_total|^holdfast_rtp_packets_total' "$OUT/metrics-end.txt"
python3 - "$OUT/samples.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for r in rows:
    for k in r:
        if k != "phase": r[k] = float(r[k] or 0)
phase = lambda p: [r for r in rows if r["phase"] == p]
start, churn, quiet = phase("idle")[-1], phase("churn"), phase("quiet")
end_churn, end = churn[-1], quiet[-1]
peak = max(rows, key=lambda r: r["rss_kb"])
mb = lambda kb: f"{kb/1024:.1f} MiB"
print("| point | t s | RSS | of which anonymous (heap, stacks) | descriptors | calls up | calls ended |")
print("|---|---|---|---|---|---|---|")
for name, r in (("start (idle)", start), ("peak RSS", peak), ("end of churn", end_churn), ("end of quiet tail", end)):
    print(f"| {name} | {r['t_s']:.0f} | {mb(r['rss_kb'])} | {mb(r['rss_anon_kb'])} | {r['fds']:.0f} | {r['calls_active']:.0f} | {r['calls_ended']:.0f} |")
up = sorted(r["calls_active"] for r in churn)
median_up = up[len(up) // 2]
print(f"calls up during churn: median {median_up:.0f}, max {up[-1]:.0f}; peak descriptors {max(r['fds'] for r in rows):.0f}; "
      f"high-water mark (VmHWM) {mb(max(r['hwm_kb'] for r in rows))}")
# Growth per call in the steady state: samples of the churn's second half with the usual
# number of calls up (not the ramp-down), least squares of RSS and descriptors on calls ended.
mid = (churn[0]["t_s"] + churn[-1]["t_s"]) / 2
steady = [r for r in churn if r["t_s"] >= mid and r["calls_active"] >= 0.9 * median_up]
def slope(ys, xs):
    n = len(xs); mx, my = sum(xs) / n, sum(ys) / n
    d = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / d if d else float("nan")
xs = [r["calls_ended"] for r in steady]
if len(steady) >= 3 and xs[-1] > xs[0]:
    print(f"steady second half of churn ({steady[0]['t_s']:.0f}–{steady[-1]['t_s']:.0f} s, {xs[-1]-xs[0]:.0f} calls): "
          f"RSS {slope([r['rss_kb'] for r in steady], xs)*1000:+.1f} KiB per 1000 calls ({mb(steady[0]['rss_kb'])} → {mb(steady[-1]['rss_kb'])}), "
          f"descriptors {slope([r['fds'] for r in steady], xs)*1000:+.2f} per 1000 calls ({steady[0]['fds']:.0f} → {steady[-1]['fds']:.0f})")
grow = peak["rss_kb"] - start["rss_kb"]
print(f"after the quiet tail: RSS {mb(end['rss_kb'])} ({100*(end['rss_kb']-start['rss_kb'])/max(1, grow):.0f} % of the growth to the peak kept), "
      f"descriptors {end['fds']:.0f} (start {start['fds']:.0f}), calls up {end['calls_active']:.0f}, "
      f"relays open {end['relays_open']:.0f}, ports in use {end['ports_in_use']:.0f}")
EOF
} | tee "$OUT/summary.txt"
