#!/usr/bin/env bash
# Runs the kill -9 crash tests for many rounds: tests/crash.rs (journal
# only) and tests/crash_archive.rs (the drainer feeding SQLite, then
# PostgreSQL, memory letting payments go). Rounds: $1 (default 500) for
# crash.rs and SQLite, $2 (default 100) for PostgreSQL. Each test prints
# its seed; rerun one with SWITCH_CRASH_SEED=<seed> SWITCH_CRASH_RUNS=...
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-500}"
pg_runs="${2:-100}"
SWITCH_CRASH_RUNS="$runs" cargo test --release -p switch --test crash -- --nocapture
SWITCH_CRASH_RUNS="$runs" SWITCH_CRASH_PG_RUNS="$pg_runs" \
    cargo test --release -p switch --test crash_archive -- --nocapture
