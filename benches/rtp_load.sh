#!/usr/bin/env bash
# RTP relay load: CPU time per relayed packet, highest rate without loss, and added one-way
# latency through holdfast, next to rtpengine (userspace, one thread) and the minimal
# recvmmsg/sendmmsg forwarder from ../shared/peers: same generator, same rates, same run.
#
# usage: benches/rtp_load.sh [TARGET...]      TARGET: holdfast holdfast_socket rtpengine limit direct
#                                             (default: holdfast rtpengine limit direct)
# env:   RATES="20000 40000 60000 80000 100000 120000"  DUR=4 (s per step)  NCALLS=2400
#        RUNS=1  LOSS_OK=0.5 (%)  LAT_RATE=40000  LAT_DUR=$DUR  OUT=<dir>  PEERS=<peers dir>
#        A_BASE=6600 B_BASE=11400 (generator source / sink ports, +2 per call)  HF_PORTS=20000-31999
#        RT=1 (relays and the latency tool under SCHED_FIFO, for the latency percentiles)
#
# Methodology mirrors ../shared/peers/run-rtp-throughput.sh: the relay is pinned to CPU 1,
# the peers' udpgen (paced, one packet per stream visit, -b 1) and udpsink (epoll+recvmmsg)
# to CPU 0; n = R/50 streams at each rate R; a step passes with loss <= LOSS_OK % and the
# generator reaching 97 % of R; stepping stops at the first failing rate. Relay CPU is its
# user+system ticks from /proc/PID/stat over the generator's run; cpu_ns_per_pkt = that CPU
# time / packets the sink received. Then a latency step at LAT_RATE with the same pairs:
# `rtp_load latency` stamps CLOCK_MONOTONIC into each payload and reports one-way delay
# percentiles; `direct` (no relay) is the baseline, so added latency = relay - direct.
#   holdfast : target/release/holdfast, SIP on a free port, media.threads 1, media.io auto (raw
#              when run as root: one raw socket for all streams); holdfast_socket: the same
#              with media.io socket (one UDP socket per relay port); calls placed by
#              `rtp_load setup` (SIP UAC+UAS, pinned to CPU 0), which writes ng.py-format files
#   rtpengine: --num-threads=1, calls by the peers' ng.py (offer+answer), deleted afterwards
#   limit    : the peers' fwd (one socket pair 29000 -> 29002 -> 29004), pairs "0 29000"
#   direct   : pairs point straight at the sink ports (latency baseline only)
# Loopback only; every process started here is stopped by PID (trap EXIT); every loop and
# every tool is bounded (udpgen -d, udpsink -d, fwd -T, rtp_load --secs/--hold-secs).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -z "${PEERS:-}" ]; then
  for d in "$ROOT/../shared/peers" "$ROOT/../../shared/peers"; do [ -d "$d" ] && PEERS=$(cd "$d" && pwd) && break; done
fi
[ -d "${PEERS:-}" ] || { echo "peers dir not found (set PEERS=)" >&2; exit 2; }
TARGETS=${*:-holdfast rtpengine limit direct}
RATES=${RATES:-"20000 40000 60000 80000 100000 120000"}
DUR=${DUR:-4}; NCALLS=${NCALLS:-2400}; RUNS=${RUNS:-1}; LOSS_OK=${LOSS_OK:-0.5}
LAT_RATE=${LAT_RATE:-40000}; LAT_DUR=${LAT_DUR:-$DUR}
# Every port we bind stays below the kernel's ephemeral range (32768-60999), where other
# processes' sockets collide (a sink bind failed there once), and clear of SIPp's default
# media ports (6000+) and of holdfast's default relay range (16384+) that other test runs
# use: generator sources A_BASE+2i, sinks B_BASE+2i, our SIP sockets in 19000-19998,
# holdfast's relay ports in HF_PORTS (a relay bind failure ends the call). rtpengine keeps
# the peers' 30000-40000. A step whose generator or sink could not bind is retried once.
A_BASE=${A_BASE:-6600}; B_BASE=${B_BASE:-11400}; HF_PORTS=${HF_PORTS:-20000-31999}
# RT=1: every relay and the latency tool run SCHED_FIFO (chrt -f 50), so the latency
# percentiles measure the relays rather than this VM's scheduler (the CPU steps are alike).
RTPRIO=${RT:+chrt -f 50}
OUT=${OUT:-$(mktemp -d -t holdfast-rtpload-XXXX)}; mkdir -p "$OUT"
[ "$DUR" -le 60 ] && [ "$LAT_DUR" -le 60 ] && [ "$RUNS" -le 10 ] && [ "$NCALLS" -le 2400 ] \
  && [ $((A_BASE + 2*NCALLS)) -le "$B_BASE" ] && [ $((B_BASE + 2*NCALLS)) -le 65535 ] \
  || { echo "DUR/LAT_DUR <= 60, RUNS <= 10, NCALLS <= 2400, A_BASE+2*NCALLS <= B_BASE" >&2; exit 2; }
for t in $TARGETS; do case $t in holdfast|holdfast_socket|rtpengine|limit|direct) ;; *) echo "unknown target $t" >&2; exit 2;; esac; done
TCK=$(getconf CLK_TCK)

# --- tools: the peers' C tools built as run-rtp-throughput.sh builds them; our two binaries
BIN=$OUT/bin; mkdir -p "$BIN"
for b in tools/udpgen tools/udpsink limit/fwd; do
  gcc -O2 -o "$BIN/${b##*/}" "$PEERS/$b.c" || exit 1
done
cargo build --release -q || exit 1
HF=$ROOT/target/release/holdfast
RL=$(cargo build --release -q --bench rtp_load --message-format=json 2>/dev/null | python3 -c '
import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "rtp_load" and m.get("executable"):
        print(m["executable"])')
[ -x "$RL" ] || { echo "could not build benches/rtp_load.rs" >&2; exit 1; }

# --- process bookkeeping: everything we start is stopped by its PID
PIDS=()
stop_pid(){ # pid [signal]: signal, wait up to 10 s, then KILL
  local p=$1 s=${2:-TERM} k
  [ -n "$p" ] || return 0
  kill -"$s" "$p" 2>/dev/null
  for k in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  local q=(); for k in "${PIDS[@]}"; do [ "$k" != "$p" ] && q+=("$k"); done; PIDS=("${q[@]}")
  return 0
}
reap(){ # pid of a self-bounded tool: wait for its own exit
  wait "$1" 2>/dev/null
  local q=() k; for k in "${PIDS[@]}"; do [ "$k" != "$1" ] && q+=("$k"); done; PIDS=("${q[@]}")
}
stopall(){ local p; for p in "${PIDS[@]}"; do stop_pid "$p"; done; }
trap stopall EXIT
trap 'exit 130' INT TERM

cputicks(){ if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then awk '{print $14+$15}' "/proc/$1/stat"; else echo 0; fi; }
kv(){ grep -o "\(^\| \)$1=[^ ]*" "$2" 2>/dev/null | head -1 | cut -d= -f2; }   # key file
free_ports(){ # N even UDP ports on 127.0.0.1 in 19000-19998 (clear of every RTP range in use)
  python3 - "$1" <<'PY'
import socket, sys, random
n, got, socks = int(sys.argv[1]), [], []
for p in random.sample(range(19000, 19999, 2), 500):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try: s.bind(("127.0.0.1", p))
    except OSError: s.close(); continue
    socks.append(s); got.append(p)
    if len(got) == n: break
print(" ".join(map(str, got)))
PY
}

one_step(){ # dir relay_pid rate -> sets c0 c1 t0 t1 (steps' locals); fails if a tool could not bind
  local dir=$1 rp=$2 R=$3 SP
  taskset -c 0 "$BIN/udpsink" -f "$dir/ports.txt" -d $((DUR+8)) -i 700 > "$dir/sink.$R" 2>&1 & SP=$!; PIDS+=($SP)
  sleep 0.3
  if ! kill -0 $SP 2>/dev/null; then
    reap $SP; echo "  udpsink did not start: $(cat "$dir/sink.$R")" | tee -a "$dir/table.txt"; return 1
  fi
  c0=$(cputicks "$rp"); t0=$(date +%s.%N)
  taskset -c 0 "$BIN/udpgen" -f "$dir/pairs.n" -r "$R" -d "$DUR" -b 1 > "$dir/gen.$R" 2>&1
  c1=$(cputicks "$rp"); t1=$(date +%s.%N)
  if ! grep -q gen_sent= "$dir/gen.$R"; then
    stop_pid $SP; echo "  udpgen: $(cat "$dir/gen.$R")" | tee -a "$dir/table.txt"; return 1
  fi
  reap $SP                        # udpsink stops 0.7 s after the last packet (or DUR+8 s)
}

# --- one rate sweep, exactly as run-rtp-throughput.sh, plus cpu_ns_per_pkt
steps(){ # dir relay_pid
  local dir=$1 rp=$2 best=0 R n try c0 c1 t0 t1 sent recv gpps loss cpu nspp genok lossok
  printf "%-8s %-7s %-9s %-9s %-9s %-8s %-6s %-14s\n" rate streams gen_pps sent recv loss% cpu% cpu_ns_per_pkt | tee "$dir/table.txt"
  : > "$dir/steps.tsv"
  for R in $RATES; do
    n=$(( R / 50 )); [ $n -gt "$NCALLS" ] && n=$NCALLS
    head -n $n "$dir/pairs.txt" > "$dir/pairs.n"
    for try in 1 2; do
      one_step "$dir" "$rp" "$R" && break
      echo "  (a tool could not bind its ports; retrying the step once)" | tee -a "$dir/table.txt"; sleep 1
    done
    sent=$(kv gen_sent "$dir/gen.$R"); recv=$(kv sink_recv "$dir/sink.$R"); gpps=$(kv gen_pps "$dir/gen.$R")
    sent=${sent:-0}; recv=${recv:-0}; gpps=${gpps:-0}
    [ "$sent" -gt 0 ] || { echo "  generator sent nothing"; break; }
    loss=$(echo "scale=3; 100*($sent-$recv)/$sent" | bc -l)
    cpu=$(echo "scale=1; 100*($c1-$c0)/$TCK/($t1-$t0)" | bc -l)
    if [ "$recv" -gt 0 ]; then nspp=$(echo "scale=0; ($c1-$c0)*1000000000/$TCK/$recv" | bc -l); else nspp=NA; fi
    printf "%-8s %-7s %-9s %-9s %-9s %-8s %-6s %-14s\n" "$R" $n "$gpps" "$sent" "$recv" "$loss" "$cpu" "$nspp" | tee -a "$dir/table.txt"
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$R" $n "$gpps" "$sent" "$recv" "$loss" "$cpu" "$nspp" >> "$dir/steps.tsv"
    genok=$(echo "$gpps >= 0.97*$R" | bc -l); lossok=$(echo "$loss <= $LOSS_OK" | bc -l)
    if [ "$genok" = 1 ] && [ "$lossok" = 1 ]; then best=$R
    else [ "$genok" = 0 ] && echo "  (generator could not reach target: $gpps pps)" | tee -a "$dir/table.txt"; break; fi
    sleep 0.5
  done
  echo "max_pps_loss_le_${LOSS_OK}%=$best" | tee -a "$dir/table.txt"
  echo "$best" > "$dir/best.txt"
}

# --- the latency step at LAT_RATE with the same pairs, relay CPU recorded too
latency(){ # dir relay_pid
  local dir=$1 rp=$2 n c0 c1 t0 t1 recv
  n=$(( LAT_RATE / 50 )); [ $n -gt "$NCALLS" ] && n=$NCALLS
  head -n $n "$dir/pairs.txt" > "$dir/pairs.lat"
  c0=$(cputicks "$rp"); t0=$(date +%s.%N)
  $RTPRIO taskset -c 0 "$RL" latency --pairs "$dir/pairs.lat" --ports "$dir/ports.txt" --rate "$LAT_RATE" --secs "$LAT_DUR" > "$dir/latency.txt" 2>&1
  c1=$(cputicks "$rp"); t1=$(date +%s.%N)
  recv=$(kv recv "$dir/latency.txt"); recv=${recv:-0}
  if [ -n "$rp" ] && [ "$recv" -gt 0 ]; then
    echo " cpu_ns_per_pkt=$(echo "scale=0; ($c1-$c0)*1000000000/$TCK/$recv" | bc -l) cpu%=$(echo "scale=1; 100*($c1-$c0)/$TCK/($t1-$t0)" | bc -l)" >> "$dir/latency.txt"
  fi
  echo "latency @$LAT_RATE pps: $(tr '\n' ' ' < "$dir/latency.txt")"
}

run_holdfast_socket(){ run_holdfast "$1" socket; }

run_holdfast(){ # dir [io]
  local dir=$1 io=${2:-auto} HP SETP k ports sipp uacp uasp media=""
  read -r sipp uacp uasp <<< "$(free_ports 3)"
  cat > "$dir/media.yaml" <<YAML
media:
  bind: 127.0.0.1
  ports: $HF_PORTS
  threads: 1
  io: $io
  # Longer than the run: the callee side never sends RTP and the streams above n are idle at
  # the low rates; neither may end a call mid-run.
  timeout: 300s
  ai_timeout: 300s
YAML
  write_cfg(){ {
    echo "sip:"; echo "  listen: [\"udp:127.0.0.1:$sipp\"]"
    [ -n "$1" ] && cat "$dir/media.yaml"
    cat <<YAML
carriers:
  - { id: uas, uri: "sip:127.0.0.1:$uasp", region: local, ping: false }
ai_providers:
  - { id: uac, kind: sip, uri: "sip:127.0.0.1:$uacp", region: local, ping: false, sources: ["127.0.0.1:$uacp"] }
routes:
  outbound:
    - { regions: [local], carriers: [uas] }
YAML
  } > "$dir/holdfast.yaml"; }
  write_cfg media
  if ! "$HF" check "$dir/holdfast.yaml" > "$dir/check.out" 2>&1; then
    echo "  (this holdfast has no media: section: $(grep -m1 media "$dir/check.out"); running without it)"
    write_cfg ""
    "$HF" check "$dir/holdfast.yaml" > "$dir/check.out" 2>&1 || { cat "$dir/check.out"; return 1; }
  fi
  $RTPRIO taskset -c 1 "$HF" --log-level warn,holdfast::runtime::server=info run --config "$dir/holdfast.yaml" > "$dir/holdfast.log" 2>&1 & HP=$!; PIDS+=($HP)
  sleep 1
  kill -0 $HP 2>/dev/null || { echo "holdfast did not start:"; cat "$dir/holdfast.log"; return 1; }
  taskset -c 0 "$RL" setup --sip "127.0.0.1:$sipp" --calls "$NCALLS" --pairs "$dir/pairs.txt" --ports "$dir/ports.txt" \
    --uac-port "$uacp" --uas-port "$uasp" --a-base "$A_BASE" --b-base "$B_BASE" --ready "$dir/ready" --hold-secs 600 > "$dir/setup.out" 2>&1 & SETP=$!; PIDS+=($SETP)
  for k in $(seq $(( (NCALLS / 300 + 45) * 10 ))); do
    [ -f "$dir/ready" ] && break; kill -0 $SETP 2>/dev/null || break; sleep 0.1
  done
  if [ ! -f "$dir/ready" ]; then echo "call setup failed:"; cat "$dir/setup.out"; stop_pid $SETP; stop_pid $HP INT; return 1; fi
  grep '^setup' "$dir/setup.out"
  sed 's/\x1b\[[0-9;]*m//g' "$dir/holdfast.log" | grep -o 'io="*[a-z]*' | head -1 | tr -d '"' | sed 's/^/  media /'
  grep -q 'anchored_a=0 ' "$dir/setup.out" && echo "  NOTE: holdfast did not anchor media (SDP passed through): RTP goes straight to the sink"
  steps "$dir" $HP
  latency "$dir" $HP
  stop_pid $SETP TERM            # BYE for every call
  grep '^bye' "$dir/setup.out"
  stop_pid $HP INT
}

run_rtpengine(){ # dir
  local dir=$1 RP k ngp
  read -r ngp <<< "$(free_ports 1)"
  $RTPRIO taskset -c 1 rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng=127.0.0.1:$ngp \
    --port-min=30000 --port-max=40000 --foreground --log-stderr --log-level=4 --num-threads=1 \
    --timeout=300 > "$dir/rtpengine.log" 2>&1 & RP=$!; PIDS+=($RP)
  for k in $(seq 20); do python3 "$PEERS/tools/ng.py" --ng 127.0.0.1:$ngp ping >/dev/null 2>&1 && break; sleep 0.25; done
  python3 "$PEERS/tools/ng.py" --ng 127.0.0.1:$ngp setup "$NCALLS" "$dir/pairs.txt" "$dir/ports.txt" \
    --a-base "$A_BASE" --b-base "$B_BASE" || { stop_pid $RP; return 1; }
  steps "$dir" $RP
  latency "$dir" $RP
  python3 "$PEERS/tools/ng.py" --ng 127.0.0.1:$ngp delete "$NCALLS"
  stop_pid $RP
}

run_limit(){ # dir
  local dir=$1 FP nr
  nr=$(wc -w <<< "$RATES")
  $RTPRIO taskset -c 1 "$BIN/fwd" -l 29000 -o 29002 -t 29004 -T $(( nr * (DUR + 3) + LAT_DUR + 30 )) > "$dir/fwd.out" 2>&1 & FP=$!; PIDS+=($FP)
  sleep 0.5
  for _ in $(seq 1 "$NCALLS"); do echo "0 29000"; done > "$dir/pairs.txt"
  echo 29004 > "$dir/ports.txt"
  steps "$dir" $FP
  latency "$dir" $FP
  stop_pid $FP
  cat "$dir/fwd.out"
}

run_direct(){ # dir
  local dir=$1 i
  for i in $(seq 0 $((NCALLS - 1))); do echo "$((A_BASE + 2*i)) $((B_BASE + 2*i))"; done > "$dir/pairs.txt"
  for i in $(seq 0 $((NCALLS - 1))); do echo "$((B_BASE + 2*i))"; done > "$dir/ports.txt"
  latency "$dir" ""
}

echo "# rtp_load: targets=[$TARGETS] RATES=[$RATES] DUR=$DUR NCALLS=$NCALLS RUNS=$RUNS LAT_RATE=$LAT_RATE OUT=$OUT"
echo "# $(nproc) CPUs; relay on CPU 1, generator+sink on CPU 0; holdfast $(git -C "$ROOT" log -1 --format='%h %s' | cut -c1-70)"
for run in $(seq 1 "$RUNS"); do
  for t in $TARGETS; do
    d=$OUT/run$run/$t; mkdir -p "$d"
    echo; echo "### run $run/$RUNS: $t"
    "run_$t" "$d" || echo "  $t FAILED (see $d)"
    sleep 1
  done
done

echo
python3 - "$OUT" "$TARGETS" "$RATES" "$LAT_RATE" "$LOSS_OK" <<'PY' | tee "$OUT/summary.md"
import glob, os, re, statistics as st, sys
out, targets, rates, lat_rate, loss_ok = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5]
def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else None
def kvs(path):
    try: t = open(path).read()
    except OSError: return {}
    return {k: v for k, v in re.findall(r"(\S+?)=(\S+)", t)}
def num(v):
    try: return float(v)
    except (TypeError, ValueError): return None
res = {}
for t in targets:
    runs = sorted(glob.glob(f"{out}/run*/{t}"))
    ns = {r: [] for r in rates}; best = []; p50 = []; p99 = []; p999 = []; lcpu = []; lloss = []
    for d in runs:
        if os.path.exists(f"{d}/steps.tsv"):
            for line in open(f"{d}/steps.tsv"):
                f = line.split("\t")
                if f[0] in ns: ns[f[0]].append(num(f[7]))
        if os.path.exists(f"{d}/best.txt"): best.append(num(open(f"{d}/best.txt").read()))
        k = kvs(f"{d}/latency.txt")
        p50.append(num(k.get("p50_us"))); p99.append(num(k.get("p99_us"))); p999.append(num(k.get("p999_us")))
        lcpu.append(num(k.get("cpu_ns_per_pkt"))); lloss.append(num(k.get("loss%")))
    res[t] = dict(ns={r: med(v) for r, v in ns.items()}, best=med(best), p50=med(p50), p99=med(p99),
                  p999=med(p999), lcpu=med(lcpu), lloss=med(lloss), runs=len(runs))
f = lambda x, d=0: "–" if x is None else f"{x:.{d}f}"
print(f"### RTP relay: CPU ns per relayed packet (median of runs), max rate with loss <= {loss_ok} %")
print("| target | " + " | ".join(f"ns/pkt @{int(r)//1000}k" for r in rates) + " | max pps (loss ok) |")
print("|---|" + "---|" * (len(rates) + 1))
for t in targets:
    if t == "direct": continue
    r = res[t]
    print(f"| {t} | " + " | ".join(f(r['ns'][x]) for x in rates) + f" | {f(r['best'])} |")
print()
print(f"### One-way latency at {lat_rate} pps (CLOCK_MONOTONIC stamp in the payload; added = target - direct)")
print("| target | loss % | p50 µs | p99 µs | p99.9 µs | added p50 µs | added p99 µs | relay CPU ns/pkt |")
print("|---|---|---|---|---|---|---|---|")
d = res.get("direct")
for t in targets:
    r = res[t]
    a50 = r["p50"] - d["p50"] if d and None not in (r["p50"], d["p50"]) and t != "direct" else None
    a99 = r["p99"] - d["p99"] if d and None not in (r["p99"], d["p99"]) and t != "direct" else None
    print(f"| {t} | {f(r['lloss'], 3)} | {f(r['p50'], 1)} | {f(r['p99'], 1)} | {f(r['p999'], 1)} | {f(a50, 1)} | {f(a99, 1)} | {f(r['lcpu'])} |")
print()
def at40(t):
    if t not in res: return None
    v = res[t]["ns"].get(lat_rate)
    return v if v is not None else res[t]["lcpu"]
h = at40("holdfast")
for other, goal in (("rtpengine", "<= 0.5"), ("limit", "<= 1.3")):
    o = at40(other)
    if h is not None and o:
        print(f"ratio CPU/pkt @{lat_rate} pps holdfast/{other} = {h / o:.2f}x (target {goal}x)")
if "holdfast" in res and d and res["holdfast"]["p99"] is not None and d["p99"] is not None:
    print(f"holdfast added p99 @{lat_rate} pps = {res['holdfast']['p99'] - d['p99']:.1f} µs (target < 100 µs)")
PY
echo "(raw tables in $OUT)"
