#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (SIPp), then
# checks formatting and lints, builds the benches, and runs every test. Exits non-zero on any
# failure. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
command -v sipp >/dev/null 2>&1 || { echo "sipp is still missing after install" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo bench --no-run"
cargo bench --no-run -q
echo "== cargo test (unit, integration, doc)"
# Integration tests spend most of their time waiting on SIPp and timers, so run more of
# them at once than there are cores.
cargo test --lib --bins --tests -- --test-threads="${HOLDFAST_TEST_THREADS:-4}"
cargo test --doc
echo "== benches, once each in test mode"
cargo test --benches
