#!/usr/bin/env bash
# Encryption at rest (format §15) against the same work without it, on the same data, in the same
# run: `kar backup` (to a file), `kar verify` (full) and `kar restore` (into a new topic), each
# plain and encrypted to an age key (age-keygen). The goal is at most 5% more time end to end.
# The AEAD itself is measured against the crate's own benchmark by `cargo bench --bench archive
# -- aead` (see benches/archive.rs).
#
# Seeds (once) about $BENCH_MB MiB of 1 KiB JSON records over 6 partitions (the topic stream.sh
# uses, when the size is the same). Medians of $ROUNDS; plain and encrypted alternate within each
# round so that drift hits both. Release builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH_MB=${BENCH_MB:-512}
ROUNDS=${ROUNDS:-3}
BOOTSTRAP=127.0.0.1:${KAR_KAFKA_PORT:-9092}
TOPIC=kar-bench-stream-${BENCH_MB}m
OUT_DIR=${BENCH_OUT_DIR:-.kar/bench}
mkdir -p "$OUT_DIR"

scripts/build-deps
scripts/services up >/dev/null
cargo build --release --quiet --bin kar --example bench_tool
KAR=target/release/kar
TOOL=target/release/examples/bench_tool
IDENTITY=$OUT_DIR/bench-age.txt
[[ -f $IDENTITY ]] || age-keygen -o "$IDENTITY" 2>/dev/null
RECIPIENT=$(age-keygen -y "$IDENTITY")

"$TOOL" seed "$BOOTSTRAP" "$TOPIC" 6 "$BENCH_MB"

elapsed() {
  local s e; s=$(date +%s.%N)
  bash -c "$1" >/dev/null || { echo "failed: $1" >&2; exit 1; }
  e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN {printf "%.3f", b - a}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

bp=(); be=(); vp=(); ve=(); rp=(); re=()
run=$(date +%s)
for r in $(seq 1 "$ROUNDS"); do
  plain="$OUT_DIR/crypt-$run-$r-plain.kar"; sealed="$OUT_DIR/crypt-$run-$r-sealed.kar"
  st=$(mktemp -d)
  bp+=("$(elapsed "'$KAR' backup --bootstrap $BOOTSTRAP --topics $TOPIC --out '$plain' --json")")
  be+=("$(elapsed "'$KAR' backup --bootstrap $BOOTSTRAP --topics $TOPIC --encrypt-to $RECIPIENT --out '$sealed' --json")")
  vp+=("$(elapsed "'$KAR' verify '$plain' --json")")
  ve+=("$(elapsed "'$KAR' verify '$sealed' --identity '$IDENTITY' --json")")
  rp+=("$(elapsed "'$KAR' restore '$plain' --bootstrap $BOOTSTRAP --map $TOPIC=kar-bench-crypt-$run-$r-p --state $st/p --json")")
  re+=("$(elapsed "'$KAR' restore '$sealed' --identity '$IDENTITY' --bootstrap $BOOTSTRAP --map $TOPIC=kar-bench-crypt-$run-$r-e --state $st/e --json")")
  echo "round $r: backup ${bp[-1]}s / ${be[-1]}s encrypted, verify ${vp[-1]}s / ${ve[-1]}s, restore ${rp[-1]}s / ${re[-1]}s"
  rm -rf "$st" "$plain" "$sealed"
  "$TOOL" delete "$BOOTSTRAP" "kar-bench-crypt-$run-$r-p" >/dev/null
  "$TOOL" delete "$BOOTSTRAP" "kar-bench-crypt-$run-$r-e" >/dev/null
done
awk -v bp="$(median "${bp[@]}")" -v be="$(median "${be[@]}")" \
    -v vp="$(median "${vp[@]}")" -v ve="$(median "${ve[@]}")" \
    -v rp="$(median "${rp[@]}")" -v re="$(median "${re[@]}")" 'BEGIN {
  printf "\nmedians, plain -> encrypted (goal: at most 1.05x the time)\n"
  printf "backup  %.2fs -> %.2fs: %.3fx\n", bp, be, be / bp
  printf "verify  %.2fs -> %.2fs: %.3fx\n", vp, ve, ve / vp
  printf "restore %.2fs -> %.2fs: %.3fx\n", rp, re, re / rp
  printf "end to end (all three) %.2fs -> %.2fs: %.3fx\n", bp + vp + rp, be + ve + re, (be + ve + re) / (bp + vp + rp)
}'
