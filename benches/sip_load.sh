#!/usr/bin/env bash
# SIP load: call setup rate and INVITE→200 latency through holdfast, next to Kamailio +
# rtpengine from ../shared/peers, same SIPp scenarios, same rate, same run.
#
# usage: benches/sip_load.sh [CPS=50] [LIMIT=500] [CALLS=1500] [RUNS=3]
#        MODE=sip-only benches/sip_load.sh 400 2000 8000 3
# MODE=pcap (default) uses ../shared/peers' scenarios as they are (each call plays 8 s of
# RTP). MODE=sip-only uses the same call flow without RTP playback and a 1 s hold, for both
# stacks, to find the call-setup ceiling instead of the RTP generator's. In both modes both
# stacks anchor every call's media (Kamailio through rtpengine's NG offer/answer/delete,
# holdfast in-process): CPU is compared for whole stacks, Kamailio + rtpengine against
# holdfast, whose media worker threads' share is shown apart.
# Failed calls are explained per stack after the table (benches/sipp_failures.py: SIPp's
# error traces and final screens, each stack's warnings and errors, holdfast's call records).
# Loopback only; every load is bounded by SIPp's -m and -timeout; processes stopped by PID.
# Needs: sip-tester, kamailio, rtpengine-daemon, rtpengine-utils, python3, bc (see
# ../shared/peers/README.md for the install line).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=${PEERS:-$ROOT/../shared/peers}
R=${1:-50}; L=${2:-500}; M=${3:-1500}; RUNS=${4:-3}
OUT=${OUT:-$(mktemp -d -t holdfast-sipload-XXXX)}; mkdir -p "$OUT"
TCK=$(getconf CLK_TCK)
cargo build --release -q || exit 1
BIN=$ROOT/target/release/holdfast

PIDS=()
stopall(){ for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done; PIDS=(); }
trap stopall EXIT
ticks(){ local t=0 p; for p in "$@"; do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
# CPU ticks of holdfast's media worker threads (named holdfast-media-N).
media_ticks(){ local t=0 s; for s in /proc/$1/task/*/stat; do
  case "$(cat "${s%/stat}/comm" 2>/dev/null)" in holdfast-media-*) t=$((t + $(awk '{print $14+$15}' "$s"))) ;; esac
done; echo $t; }
pct(){ echo "scale=1; 100*($1)/$TCK/$2" | bc -l; }

cat > "$OUT/holdfast.yaml" <<YAML
# Same topology as ../shared/peers: SIPp UAC 127.0.0.1:5070 → 127.0.0.1:5060 → SIPp UAS 127.0.0.1:5080
sip:
  listen: ["udp:127.0.0.1:5060"]
carriers:
  - { id: uas, uri: "sip:127.0.0.1:5080", region: local, ping: false }
ai_providers:
  - { id: uac, kind: sip, uri: "sip:127.0.0.1:5070", region: local, ping: false, sources: ["127.0.0.1:5070"] }
routes:
  outbound:
    - { regions: [local], carriers: [uas] }
# One JSON line per call (holdfast's account of each failed call); the writer is off the call path.
records:
  path: records.jsonl
YAML

MODE=${MODE:-pcap}
UAC_SF=$PEERS/scenarios/uac_pcap_rr.xml
if [ "$MODE" = sip-only ]; then
  # The shared UAC scenario minus its RTP playback, holding 1 s instead of 8 s.
  UAC_SF=$OUT/uac_sip_only.xml
  sed -e '/play_pcap_audio/d' -e 's/<pause milliseconds="8000"\/>/<pause milliseconds="1000"\/>/' \
    "$PEERS/scenarios/uac_pcap_rr.xml" > "$UAC_SF"
  grep -q play_pcap "$UAC_SF" && { echo "could not strip RTP from the scenario" >&2; exit 1; }
fi

# Kamailio + rtpengine exactly as ../shared/peers/run-kamailio-rtpengine.sh starts them, but
# with the UAC scenario chosen above; CPU of both, over the SIPp run.
run_kamailio() {
  local dir=$OUT/kamailio-$1; mkdir -p "$dir"
  rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng=127.0.0.1:2223 --listen-cli=127.0.0.1:9900 \
    --port-min=30000 --port-max=40000 --foreground --log-stderr --log-level=4 --num-threads=2 --timeout=60 \
    > "$dir/rtpengine.log" 2>&1 & local RPID=$!; PIDS+=($RPID)
  for _ in 1 2 3 4 5 6 7 8 9 10; do python3 "$PEERS/tools/ng.py" ping >/dev/null 2>&1 && break; sleep 0.5; done
  kamailio -f "$PEERS/conf/kamailio.cfg" -DD -E > "$dir/kamailio.log" 2>&1 & local KPID=$!; PIDS+=($KPID)
  sleep 1.5
  (cd "$dir" && exec sipp -sf "$PEERS/scenarios/uas_sdp.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 16000 -nostdin \
     -timeout $((M / R + 120)) -trace_err > uas.out 2>&1) & local UPID=$!; PIDS+=($UPID)
  sleep 1
  local KP k0 r0 t0 k1 r1 t1 rc el
  KP="$KPID $(cat /proc/$KPID/task/*/children 2>/dev/null)"
  k0=$(ticks $KP); r0=$(ticks $RPID); t0=$(date +%s.%N)
  (cd "$dir" && sipp 127.0.0.1:5060 -sf "$UAC_SF" -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 20000 \
     -r $R -l $L -m $M -nostdin -timeout $((M / R + 90)) -timeout_error \
     -trace_stat -stf uac_stat.csv -fd 1 -trace_rtt -rtt_freq 1 -trace_err > uac.out 2>&1); rc=$?
  k1=$(ticks $KP); r1=$(ticks $RPID); t1=$(date +%s.%N)
  stopall
  el=$(echo "$t1 - $t0" | bc -l)
  {
    echo "== kamailio+rtpengine ($MODE)  r=$R l=$L m=$M  (uac rc=$rc, wall ${el%.*}s)"
    python3 "$PEERS/tools/sippstats.py" "$dir/uac_stat.csv" "$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)"
    echo "cpu_kamailio_pct=$(pct "$k1-$k0" "$el") cpu_rtpengine_pct=$(pct "$r1-$r0" "$el") (100 = one core)"
  } | tee "$dir/summary.txt"
}

run_holdfast() {
  local dir=$OUT/holdfast-$1; mkdir -p "$dir"
  (cd "$dir" && exec "$BIN" --log-format json --log-level warn run --config "$OUT/holdfast.yaml" > holdfast.log 2>&1) &
  local HPID=$!; PIDS+=($HPID)
  sleep 0.5
  (cd "$dir" && exec sipp -sf "$PEERS/scenarios/uas_sdp.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 16000 -nostdin \
     -timeout $((M / R + 120)) -trace_err > uas.out 2>&1) & local UPID=$!; PIDS+=($UPID)
  sleep 1
  local h0 m0 t0 h1 m1 t1 rc el
  h0=$(ticks $HPID); m0=$(media_ticks $HPID); t0=$(date +%s.%N)
  (cd "$dir" && sipp 127.0.0.1:5060 -sf "$UAC_SF" -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 20000 \
     -r $R -l $L -m $M -nostdin -timeout $((M / R + 90)) -timeout_error \
     -trace_stat -stf uac_stat.csv -fd 1 -trace_rtt -rtt_freq 1 -trace_err > uac.out 2>&1); rc=$?
  h1=$(ticks $HPID); m1=$(media_ticks $HPID); t1=$(date +%s.%N)
  sleep 1  # call records wait for the relays' final statistics
  stopall
  el=$(echo "$t1 - $t0" | bc -l)
  {
    echo "== holdfast ($MODE)  r=$R l=$L m=$M  (uac rc=$rc, wall ${el%.*}s)"
    python3 "$PEERS/tools/sippstats.py" "$dir/uac_stat.csv" "$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)"
    echo "cpu_holdfast_pct=$(pct "$h1-$h0" "$el") cpu_holdfast_media_pct=$(pct "$m1-$m0" "$el") (100 = one core; media = its holdfast-media-N threads)"
  } | tee "$dir/summary.txt"
}

for i in $(seq 1 "$RUNS"); do
  echo "### run $i/$RUNS ($MODE)"
  if [ "$MODE" = pcap ]; then
    OUT_K=$OUT/kamailio-$i
    OUT=$OUT_K bash "$PEERS/run-kamailio-rtpengine.sh" "$R" "$L" "$M" > /dev/null 2>&1
    cat "$OUT_K/summary.txt"
  else
    run_kamailio "$i"
  fi
  run_holdfast "$i"
done

echo
echo "### medians over $RUNS runs (r=$R l=$L m=$M, $MODE)"
python3 - "$OUT" "$RUNS" <<'PY'
import math, re, sys, glob, statistics as st
out, runs = sys.argv[1], int(sys.argv[2])
def grab(kind):
    rows = []
    for f in sorted(glob.glob(f"{out}/{kind}-*/summary.txt")):
        t = open(f).read()
        g = lambda k: float(m.group(1)) if (m := re.search(r"\b" + k + r"=([0-9.]+)", t)) else float("nan")
        if kind == "holdfast":
            cpu, media = g("cpu_holdfast_pct"), g("cpu_holdfast_media_pct")
        else:
            media = g("cpu_rtpengine_pct")
            cpu = g("cpu_kamailio_pct") + media
        rows.append(dict(ok=g("sipp_successful_calls"), failed=g("sipp_failed_calls"), cps=g("cps_achieved"),
                         p50=g("p50"), p99=g("p99"), cpu=cpu, media=media))
    return rows
def med(rows, k):
    v = [r[k] for r in rows if not math.isnan(r[k])]
    return st.median(v) if v else float("nan")
def ms(v):  # SIPp's rtd is whole milliseconds: 0 means under 1 ms
    if math.isnan(v): return "–"
    return "<1" if v == 0 else f"{v:g}"
def ratio(h, k, unit=""):
    """holdfast / reference, robust to figures SIPp rounds to 0 ms and to missing runs."""
    if math.isnan(h) or math.isnan(k): return "n/a (missing runs)"
    if unit == "ms":
        if h == 0 and k == 0: return "both <1 ms"
        if k == 0: return f"n/a (Kamailio <1 ms, holdfast {ms(h)} ms)"
        if h == 0: return f"<{1 / k:.2f}× (holdfast <1 ms)"
    elif k == 0:
        return "n/a (reference 0)"
    return f"{h / k:.2f}×"
print("| stack | successful calls | failed | CPS achieved | INVITE→200 p50 ms | p99 ms | "
      "CPU % of a core, whole stack: Kamailio + rtpengine, holdfast (media relay in-process) | of which media relay |")
print("|---|---|---|---|---|---|---|---|")
res, runs_text = {}, []
for kind, label, relay in (("kamailio", "Kamailio 5.6 + rtpengine", "rtpengine"), ("holdfast", "holdfast", "media threads")):
    rows = grab(kind)
    if not rows: continue
    m = {k: med(rows, k) for k in rows[0]}
    res[kind] = m
    print(f"| {label} | {m['ok']:.0f} | {m['failed']:.0f} | {m['cps']:.1f} | {ms(m['p50'])} | {ms(m['p99'])} | "
          f"{m['cpu']:.1f} | {relay} {m['media']:.1f} |")
    each = lambda k, f: " / ".join(f(r[k]) for r in rows)
    runs_text.append(f"{label}, run by run: p50 {each('p50', ms)} ms, p99 {each('p99', ms)} ms, "
                     f"CPU {each('cpu', '{:.1f}'.format)} % ({relay} {each('media', '{:.1f}'.format)}), "
                     f"failed {each('failed', '{:.0f}'.format)}")
print("\n" + "\n".join(runs_text))
if len(res) == 2:
    k, h = res["kamailio"], res["holdfast"]
    print(f"\nratios holdfast/(Kamailio + rtpengine): p50 {ratio(h['p50'], k['p50'], 'ms')}, p99 {ratio(h['p99'], k['p99'], 'ms')}, "
          f"whole-stack CPU {ratio(h['cpu'], k['cpu'])}")
PY
echo
echo "### failed calls by reason (all runs; benches/sipp_failures.py)"
python3 "$ROOT/benches/sipp_failures.py" "Kamailio 5.6 + rtpengine" "$OUT"/kamailio-*
python3 "$ROOT/benches/sipp_failures.py" "holdfast" "$OUT"/holdfast-*
echo "(raw runs in $OUT)"
