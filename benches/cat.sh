#!/usr/bin/env bash
# `kar cat` against Confluent's Python client, and the index's point lookup, measured in one run:
#
# 1. Throughput: $CAT_RECORDS Avro records (an order with a referenced address, an enum, an
#    array, a map, bytes; ~110 bytes each) and as many Protobuf records (an order with three
#    nested lines and an imported Money; ~90 bytes), written by Confluent's serializer (Avro) and
#    Google's protobuf runtime with Confluent's framing (Protobuf), backed up with their schemas.
#    `kar cat ARCHIVE --topic T > /dev/null` (records decoded to JSON Lines per second, from the
#    archive: chunks decompressed and checked, every value decoded) against Confluent's Python
#    deserializers decoding the same records (read into memory first, not timed) and writing each
#    with json.dumps to /dev/null (scripts/python/bench_cat.py). Medians of $ROUNDS.
# 2. Point lookup: a $LOOKUP_MB MiB topic of 1 KiB records over 6 partitions, backed up with
#    --compression none (an archive as large as the records: multi-GB by default), then
#    `kar cat ARCHIVE --partition 3 --offset MID` (MID: the middle of the partition): its time and
#    the chunks it read, against `kar cat ARCHIVE --partition 3` to /dev/null, the whole partition,
#    which is what a reader without the index does to find a record. Page cache warm (the archive
#    was just written); `DROP_CACHES=1` (root) drops it before each command.
#
# Release builds. Writes the figures to $OUT_DIR/cat.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CAT_RECORDS=${CAT_RECORDS:-200000}
LOOKUP_MB=${LOOKUP_MB:-3072}
ROUNDS=${ROUNDS:-3}
BOOTSTRAP=127.0.0.1:${KAR_KAFKA_PORT:-9092}
REGISTRY=http://127.0.0.1:${KAR_REGISTRY_SOURCE_PORT:-8081}
OUT_DIR=${BENCH_OUT_DIR:-.kar/bench}
mkdir -p "$OUT_DIR/cat-proto"

scripts/build-deps
scripts/services up >/dev/null
PY=$(scripts/python-deps)
cargo build --release --quiet --bin kar --example bench_tool
KAR=target/release/kar
TOOL=target/release/examples/bench_tool

elapsed() {
  local s e; s=$(date +%s.%N)
  bash -c "$1" >/dev/null || { echo "failed: $1" >&2; exit 1; }
  e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN {printf "%.3f", b - a}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
drop() { [[ ${DROP_CACHES:-0} == 1 ]] && { sync; echo 3 > /proc/sys/vm/drop_caches; } || true; }

# 1. Throughput.
declare -A kar_rps py_rps
for kind in avro protobuf; do
  topic=kar-bench-cat-$kind-$CAT_RECORDS
  archive=$OUT_DIR/cat-$kind-$CAT_RECORDS.kar
  if ! "$KAR" inspect "$archive" >/dev/null 2>&1; then
    "$PY" scripts/python/bench_cat.py seed "$BOOTSTRAP" "$topic" "$REGISTRY" "$OUT_DIR/cat-proto" "$kind" "$CAT_RECORDS"
    "$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$topic" --registry "$REGISTRY" \
      --subjects "$topic-.*" --out "$archive" --json >/dev/null
  fi
  k=(); p=()
  for r in $(seq 1 "$ROUNDS"); do
    k+=("$(elapsed "'$KAR' cat '$archive'")")
    p+=("$("$PY" scripts/python/bench_cat.py decode "$BOOTSTRAP" "$topic" "$REGISTRY" "$OUT_DIR/cat-proto" "$kind" \
      | "$PY" -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["seconds"])')")
  done
  kar_rps[$kind]=$(awk -v n="$CAT_RECORDS" -v s="$(median "${k[@]}")" 'BEGIN {printf "%.0f", n / s}')
  py_rps[$kind]=$(awk -v n="$CAT_RECORDS" -v s="$(median "${p[@]}")" 'BEGIN {printf "%.0f", n / s}')
  echo "cat $kind: kar ${kar_rps[$kind]} records/s (rounds ${k[*]} s), Confluent's Python client ${py_rps[$kind]} records/s (rounds ${p[*]} s): $(awk -v a="${kar_rps[$kind]}" -v b="${py_rps[$kind]}" 'BEGIN {printf "%.1fx", a / b}')"
done

# 2. Point lookup.
topic=kar-bench-lookup-${LOOKUP_MB}m
archive=$OUT_DIR/lookup-${LOOKUP_MB}m-none.kar
"$TOOL" seed "$BOOTSTRAP" "$topic" 6 "$LOOKUP_MB"
[[ -f $archive ]] || "$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$topic" --compression none \
  --out "$archive" --json >/dev/null
size=$(stat -c %s "$archive")
last=$("$KAR" inspect "$archive" --json | "$PY" -c '
import json, sys
r = json.load(sys.stdin)
print(next(p["last_offset"] for t in r["topics"] for p in t["partitions"] if p["partition"] == 3))')
mid=$((last / 2))
lookup=(); scan=()
for r in $(seq 1 "$ROUNDS"); do
  drop; lookup+=("$(elapsed "'$KAR' cat '$archive' --partition 3 --offset $mid")")
  drop; scan+=("$(elapsed "'$KAR' cat '$archive' --partition 3")")
done
stats=$("$KAR" cat "$archive" --partition 3 --offset "$mid" --stats 2>&1 >/dev/null | tail -1)
echo "point lookup in a $((size / 1048576)) MiB archive: offset $mid of partition 3 in $(median "${lookup[@]}") s (rounds ${lookup[*]}), $stats; the whole partition: $(median "${scan[@]}") s (rounds ${scan[*]})"

cat > "$OUT_DIR/cat.json" <<EOF
{"records": $CAT_RECORDS, "kar_avro_rps": ${kar_rps[avro]}, "python_avro_rps": ${py_rps[avro]},
 "kar_protobuf_rps": ${kar_rps[protobuf]}, "python_protobuf_rps": ${py_rps[protobuf]},
 "lookup_archive_bytes": $size, "lookup_seconds": $(median "${lookup[@]}"),
 "partition_scan_seconds": $(median "${scan[@]}"), "lookup_stats": $stats}
EOF
