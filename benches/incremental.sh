#!/usr/bin/env bash
# Incremental backups (format §16) against full ones, on the same topic in the same run: after 1%
# new records on a topic of $BENCH_MB MiB (1 KiB JSON records over 6 partitions), `kar backup
# --incremental-from` the previous full archive against a full backup taken at the same point.
# The goal: time and bytes proportional to the new data, at most 5% of the full backup's plus a
# constant; the constant is measured too: an incremental backup with nothing new (the cluster's
# metadata, consumer groups and registry are read in full every time, and each partition's
# lineage checked). Medians of $ROUNDS; each round adds another 1%. Release builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH_MB=${BENCH_MB:-1024}
ROUNDS=${ROUNDS:-3}
BOOTSTRAP=127.0.0.1:${KAR_KAFKA_PORT:-9092}
TOPIC=kar-bench-incremental-${BENCH_MB}m
OUT_DIR=${BENCH_OUT_DIR:-.kar/bench}
mkdir -p "$OUT_DIR"

scripts/build-deps
scripts/services up >/dev/null
cargo build --release --quiet --bin kar --example bench_tool
KAR=target/release/kar
TOOL=target/release/examples/bench_tool

"$TOOL" seed "$BOOTSTRAP" "$TOPIC" 6 "$BENCH_MB"

elapsed() {
  local s e; s=$(date +%s.%N)
  bash -c "$1" >/dev/null || { echo "failed: $1" >&2; exit 1; }
  e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN {printf "%.3f", b - a}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
size() { stat -c %s "$1"; }

ft=(); fb=(); it=(); ib=(); ct=()
run=$(date +%s)
prev="$OUT_DIR/incr-$run-0.kar"
"$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" --out "$prev" --json >/dev/null
for r in $(seq 1 "$ROUNDS"); do
  "$TOOL" append "$BOOTSTRAP" "$TOPIC" 6 $((BENCH_MB * 1024 / 100)) >/dev/null
  inc="$OUT_DIR/incr-$run-$r-member.kar"; full="$OUT_DIR/incr-$run-$r-full.kar"
  it+=("$(elapsed "'$KAR' backup --bootstrap $BOOTSTRAP --topics $TOPIC --incremental-from '$prev' --out '$inc' --json")")
  ft+=("$(elapsed "'$KAR' backup --bootstrap $BOOTSTRAP --topics $TOPIC --out '$full' --json")")
  ib+=("$(size "$inc")"); fb+=("$(size "$full")")
  echo "round $r: full ${ft[-1]}s ${fb[-1]} bytes, incremental ${it[-1]}s ${ib[-1]} bytes"
  empty="$OUT_DIR/incr-$run-$r-empty.kar"
  ct+=("$(elapsed "'$KAR' backup --bootstrap $BOOTSTRAP --topics $TOPIC --incremental-from '$full' --out '$empty' --json")")
  echo "         nothing new since the full one: incremental ${ct[-1]}s"
  rm -f "$prev" "$inc" "$empty"
  prev=$full
done
rm -f "$prev"
awk -v ft="$(median "${ft[@]}")" -v it="$(median "${it[@]}")" -v ct="$(median "${ct[@]}")" \
    -v fb="$(median "${fb[@]}")" -v ib="$(median "${ib[@]}")" 'BEGIN {
  printf "\nmedians after 1%% new records (goal: at most 0.05x the full backup, plus a constant)\n"
  printf "time   full %.2fs, incremental %.2fs: %.3fx\n", ft, it, it / ft
  printf "       the constant (nothing new) %.2fs; above it %.3fs: %.3fx the full backup\n", ct, it - ct, (it - ct) / ft
  printf "bytes  full %d, incremental %d: %.4fx\n", fb, ib, ib / fb
}'
