#!/usr/bin/env bash
# Game-day drill figures: each `holdfast drill` scenario RUNS times (release build), one
# line per scenario with the median run's figures (runs ordered by re-route gap p50): calls
# survived, re-route gap p50/p99/max, outbound setup after the kill, and for --quiet-agents
# the callers in a pause at the kill and holdfast's liveness checks of silent AI legs.
# Every drill is bounded by its own hold and by `timeout`; the drill starts, kills (by PID)
# and reaps its own holdfast and peers, all on 127.0.0.1.
#
# usage: benches/drill.sh [RUNS=3]
# Needs: jq.
set -u
cd "$(dirname "$0")/.."
RUNS=${1:-3}
OUT=${OUT:-$(mktemp -d -t holdfast-drill-bench-XXXX)}; mkdir -p "$OUT"
cargo build --release -q || exit 1
BIN=$PWD/target/release/holdfast

SCENARIOS=(
  "--calls 40 --hold 5s"
  "--fail ai-provider-ws --calls 40 --hold 5s"
  "--fail all --calls 30 --hold 5s"
  "--fail all --quiet-agents --calls 11"
  "--fail all --quiet-agents --calls 30"
)

echo "| command | survived | gap p50 / p99 / max ms | outbound setup p50 / max ms | in a pause at the kill | liveness checks (started / alive / failed) |"
echo "| --- | --- | --- | --- | --- | --- |"
n=0
for sc in "${SCENARIOS[@]}"; do
  n=$((n + 1))
  for r in $(seq 1 "$RUNS"); do
    # shellcheck disable=SC2086
    timeout 180 "$BIN" drill $sc --json --report "$OUT/s$n-r$r.md" >"$OUT/s$n-r$r.json" 2>"$OUT/s$n-r$r.err"
  done
  # The median run by gap p50.
  med=$(for f in "$OUT"/s$n-r*.json; do
          jq -r --arg f "$f" '"\(.summary.gap_p50_ms // 0) \($f)"' "$f" 2>/dev/null
        done | sort -n | awk '{a[NR]=$2} END {print a[int((NR+1)/2)]}')
  if [ -z "$med" ]; then
    echo "| \`holdfast drill $sc\` | (no result, see $OUT) | | | | |"
    continue
  fi
  jq -r --arg sc "$sc" --arg runs "$RUNS" '
    def v(x): if x == null then "—" else (x|tostring) end;
    "| `holdfast drill \($sc)` | \(.summary.survived)/\(.summary.placed) | \(v(.summary.gap_p50_ms)) / \(v(.summary.gap_p99_ms)) / \(v(.summary.gap_max_ms)) | \(if .summary.failover_p50_ms == null then "—" else "\(.summary.failover_p50_ms) / \(.summary.failover_max_ms)" end) | \(if .speech.mode == "turns" then "\(.summary.on_failed_pausing) of \(.summary.on_failed)" else "—" end) | \(if .liveness_checks == null then "—" else "\(.liveness_checks.started) / \(.liveness_checks.alive) / \(.liveness_checks.failed)" end) |"
  ' "$med"
done
echo
echo "runs: $RUNS per scenario; every run's JSON and postmortem in $OUT"
