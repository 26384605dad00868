#!/usr/bin/env bash
# The Berth test command: installs what is missing, then runs formatting,
# lints, the build, the Rust tests (unit, integration, root-only containerd
# tests) and the Python end-to-end suite against the built binaries. Exits
# non-zero on the first failure and prints a per-step summary with durations.
#
#   bash scripts/test.sh            # everything
#   BERTH_E2E_ARGS="-k corpus" bash scripts/test.sh   # narrow the e2e run
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

berth_require_root
exec </dev/null
T0=$(date +%s)
trap 'berth_summary; printf "total %ss\n" "$(( $(date +%s) - T0 ))" >&2' EXIT

berth_step "install dependencies" berth_install_deps
berth_step "cargo fmt --check" cargo fmt --all -- --check
berth_step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
berth_step "cargo build" cargo build --workspace
berth_step "cargo test" cargo test --workspace
export BERTH_BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/debug"
# shellcheck disable=SC2086
berth_step "pytest tests/e2e" python3 -m pytest tests/e2e -n 2 --timeout 600 -q ${BERTH_E2E_ARGS:-}
berth_log "all steps passed"
