#!/usr/bin/env bash
# Restore throughput against a bare rdkafka producer, and the cost of rewriting schema IDs, in one
# run.
#
# Seeds (once) about $BENCH_MB MiB of 1 KiB Confluent wire-format records over 6 partitions and
# backs them up with the source registry. Then, $ROUNDS times each, times: (a) a bare producer with
# kar's restore producer settings writing the same records from memory (as many producer threads as
# kar's default --concurrency, 4), (b) `kar restore` without
# a registry (records as archived), (c) `kar restore --schema-ids rewrite` into the target
# registry, where the schema gets another ID, so every value's ID is rewritten. Each run writes a
# new topic. Prints medians and ratios. Then the effect of the producer's compression: one more
# restore with --producer-compression none, and the bytes each restored topic takes in the broker's
# log directory (default lz4 vs none; the source topic, produced with lz4, for reference). Release
# builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH_MB=${BENCH_MB:-1024}
ROUNDS=${ROUNDS:-2}
BOOTSTRAP=127.0.0.1:${KAR_KAFKA_PORT:-9092}
SOURCE=http://127.0.0.1:${KAR_REGISTRY_SOURCE_PORT:-8081}
TARGET=http://127.0.0.1:${KAR_REGISTRY_TARGET_PORT:-8082}
TOPIC=kar-bench-wire-${BENCH_MB}m
OUT_DIR=${BENCH_OUT_DIR:-.kar/bench}
ARCHIVE=$OUT_DIR/restore-${BENCH_MB}m.kar
mkdir -p "$OUT_DIR"

scripts/build-deps
scripts/services up >/dev/null
cargo build --release --quiet --bin kar --example bench_tool
KAR=target/release/kar
TOOL=target/release/examples/bench_tool

register() { # registry subject schema -> id
  curl -sf -X POST -H 'Content-Type: application/vnd.schemaregistry.v1+json' "$1/subjects/$2/versions" \
    -d "{\"schema\": $(printf '%s' "$3" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
schema='{"type":"record","name":"BenchOrder","namespace":"kar.bench","fields":[{"name":"raw","type":"string"}]}'
id=$(register "$SOURCE" kar-bench-value "$schema")
# Something unrelated on the target first, so the restored schema gets another ID there.
register "$TARGET" kar-bench-unrelated-value '{"type":"record","name":"Unrelated","namespace":"kar.bench","fields":[{"name":"x","type":"int"}]}' >/dev/null

"$TOOL" seed "$BOOTSTRAP" "$TOPIC" 6 "$BENCH_MB" "$id"
if [[ ! -f $ARCHIVE ]]; then
  "$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" --registry "$SOURCE" --subjects kar-bench-value \
    --out "$ARCHIVE" --json >/dev/null
fi

# Times a command; a failing command stops the bench (a failed restore is not a fast one).
elapsed() {
  local s e; s=$(date +%s.%N)
  "$@" >"$OUT_DIR/last.json" || { echo "failed: $*" >&2; cat "$OUT_DIR/last.json" >&2; exit 1; }
  e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN {printf "%.3f", b - a}'
}
bare=(); plain=(); rewrite=(); plain_rec=(); rewrite_rec=()
run=$(date +%s)
for r in $(seq 1 "$ROUNDS"); do
  read -r records secs < <("$TOOL" produce "$BOOTSTRAP" "$ARCHIVE" "$TOPIC" "kar-bench-bare-$run-$r")
  bare+=("$secs")
  s1=$(mktemp -d); s2=$(mktemp -d)
  records_seconds() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["records_seconds"])' "$OUT_DIR/last.json"; }
  run_plain() {
    plain+=("$(elapsed "$KAR" restore "$ARCHIVE" --bootstrap "$BOOTSTRAP" --map "$TOPIC=kar-bench-plain-$run-$r" --state "$s1" --json)")
    plain_rec+=("$(records_seconds)")
  }
  run_rewrite() {
    rewrite+=("$(elapsed "$KAR" restore "$ARCHIVE" --bootstrap "$BOOTSTRAP" --registry "$TARGET" --schema-ids rewrite \
      --map "$TOPIC=kar-bench-rewrite-$run-$r" --state "$s2" --json)")
    rewrite_rec+=("$(records_seconds)")
  }
  # Alternate which goes first: the broker is still busy with the previous run's gigabyte.
  if ((r % 2)); then run_plain; run_rewrite; else run_rewrite; run_plain; fi
  rm -rf "$s1" "$s2"
  echo "round $r: bare producer ${bare[-1]}s, kar restore ${plain[-1]}s (records ${plain_rec[-1]}s), with --schema-ids rewrite ${rewrite[-1]}s (records ${rewrite_rec[-1]}s) ($records records)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
b=$(median "${bare[@]}"); k=$(median "${plain[@]}"); w=$(median "${rewrite[@]}")
kr=$(median "${plain_rec[@]}"); wr=$(median "${rewrite_rec[@]}")
awk -v r="$ROUNDS" -v b="$b" -v k="$k" -v w="$w" -v kr="$kr" -v wr="$wr" -v n="$records" 'BEGIN {
  printf "\nmedian of %d: bare producer %.2fs (%.0f records/s), kar restore %.2fs (%.0f records/s), with rewrite %.2fs\n", r, b, n / b, k, n / k, w
  printf "kar / bare throughput ratio: %.2f\n", b / k
  printf "rewrite cost: %+.1f%% for the whole restore (registry phase included), %+.1f%% for the record phase (%.2fs vs %.2fs)\n", (w / k - 1) * 100, (wr / kr - 1) * 100, wr, kr
}'

# Compression: what the restored topics take on the broker's disk, and what none costs in time.
none_secs=$(elapsed "$KAR" restore "$ARCHIVE" --bootstrap "$BOOTSTRAP" --producer-compression none \
  --map "$TOPIC=kar-bench-none-$run" --state "$(mktemp -d)" --json)
DATA=${KAR_RUN_DIR:-${TMPDIR:-/tmp}/kar-services}/kafka/data
topic_bytes() { du -sbc "$DATA/$1"-* | tail -1 | cut -f1; }
src_b=$(topic_bytes "$TOPIC"); lz4_b=$(topic_bytes "kar-bench-plain-$run-1"); none_b=$(topic_bytes "kar-bench-none-$run")
awk -v s="$src_b" -v l="$lz4_b" -v n="$none_b" -v nt="$none_secs" -v lt="${plain[0]}" 'BEGIN {
  printf "\non the broker'"'"'s disk: source (lz4) %.0f MiB, restored with lz4 (default) %.0f MiB, with --producer-compression none %.0f MiB (%.2fx); restore time none %.2fs vs lz4 %.2fs (round 1)\n", s / 1048576, l / 1048576, n / 1048576, n / l, nt, lt
}'
