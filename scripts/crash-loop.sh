#!/usr/bin/env bash
# Runs the kill -9 crash test for many rounds (default 500). Each round's
# seed is printed; rerun one with SWITCH_CRASH_SEED=<seed> SWITCH_CRASH_RUNS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
SWITCH_CRASH_RUNS="${1:-500}" cargo test --release -p switch --test crash -- --nocapture
