#!/usr/bin/env bash
# kar against baselines the project did not write, on the same records in one run.
#
# Seeds (once) a topic of $BENCH_MB MiB of order events (bench_tool seed-orders: every record
# different, ~0.9 KiB of JSON, or with PAYLOAD=avro the same orders in Avro, Confluent's wire
# format, schema registered in the source registry), 6 partitions, keyed by customer, lz4 from
# the producer. Then $ROUNDS rounds, the order of the jobs turned by one each round, every job a
# whole process timed by GNU time (wall, user+sys CPU, peak RSS):
#
#   backup side   kcat -C draining every partition (to /dev/null, and keys and values to a file);
#                 Apache Kafka's ConsumerPerformance (kafka-tools, -Xmx512M as its script sets);
#                 zstd -3 -T1 over the uncompressed archive (the compression kar's backup does);
#                 kar backup (zstd 3, the default) and kar backup --compression none
#   restore side  kcat -P of the same keys and values from a file, and ProducerPerformance of the
#                 same values (it sends no keys), both with kar's producer settings (acks=all,
#                 idempotent, lz4, batch.size=1000000, linger.ms=96: a restore's at its default
#                 transaction size; ProducerPerformance's own send time is the figure compared:
#                 its process also loads the payload file);
#                 kar restore of the archive, with its default full pre-flight check of every
#                 chunk and with --verify quick.
#                 JSON only: both read records from lines. Each writes a new 6-partition topic,
#                 deleted after the round; the baselines' record counts are checked (kar's restore
#                 is transactional, so offsets count markers too: its exit status is its check,
#                 non-zero unless every record was written).
#
# Prints each job's median and spread (the broker's CPU and the VM's steal time meanwhile, from
# /proc) and the ratios issue 18 sets goals for. MODE=memory runs only kar backup and kar restore
# (one round unless ROUNDS is set), for peak RSS at a larger BENCH_MB. Release builds. Needs the
# disk for the topic about 4 times over.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH_MB=${BENCH_MB:-1024}
MODE=${MODE:-all}
if [[ $MODE = memory ]]; then ROUNDS=${ROUNDS:-1}; else ROUNDS=${ROUNDS:-3}; fi
PAYLOAD=${PAYLOAD:-json}
BOOTSTRAP=127.0.0.1:${KAR_KAFKA_PORT:-9092}
SOURCE=http://127.0.0.1:${KAR_REGISTRY_SOURCE_PORT:-8081}
TOPIC=kar-cmp-$PAYLOAD-${BENCH_MB}m
OUT=${BENCH_OUT_DIR:-.kar/bench}/compare
mkdir -p "$OUT"
rm -f "$OUT"/results.txt

source benches/tools.sh
scripts/build-deps
scripts/services up >/dev/null
cargo build --release --quiet --bin kar --example bench_tool
KAR=target/release/kar
TOOL=target/release/examples/bench_tool

form=json
subjects=()
if [[ $PAYLOAD = avro ]]; then
  id=$(curl -sf -X POST -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
    "$SOURCE/subjects/$TOPIC-value/versions" \
    -d "$("$TOOL" schema | python3 -c 'import json,sys; print(json.dumps({"schema": sys.stdin.read()}))')" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  form=avro:$id
  subjects=(--registry "$SOURCE" --subjects "$TOPIC-value")
fi
"$TOOL" seed-orders "$BOOTSTRAP" "$TOPIC" 6 "$BENCH_MB" "$form"

# The broker's CPU so far, in clock ticks (user + system): the jobs share the two cores with it.
BROKER_PID=$(cat "${KAR_RUN_DIR:-/tmp/kar-services}/kafka.pid")
TICKS=$(getconf CLK_TCK)
broker_ticks() { awk '{print $14 + $15}' "/proc/$BROKER_PID/stat"; }
# The VM's steal time (/proc/stat): CPU time the host gave to others while this VM wanted it. A
# shared host slows every job of a round alike only in expectation; the column says when it did.
steal_ticks() { awk '$1 == "cpu" {print $9}' /proc/stat; }

# run NAME COMMAND...: times one whole process, and the broker's CPU meanwhile; a failure stops
# the bench (a failed job is not a fast one).
run() {
  local name=$1; shift
  local before; before=$(broker_ticks)
  local stolen; stolen=$(steal_ticks)
  if ! "$TIME" -f '%e %U %S %M' -o "$OUT/time" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; then
    echo "failed: $*" >&2; tail -20 "$OUT/$name.err" >&2; exit 1
  fi
  local broker=$(( $(broker_ticks) - before ))
  stolen=$(( $(steal_ticks) - stolen ))
  read -r wall user sys rss <"$OUT/time"
  awk -v n="$name" -v w="$wall" -v u="$user" -v s="$sys" -v m="$rss" -v b="$broker" -v t="$TICKS" \
    -v st="$stolen" 'BEGIN {printf "%s %.2f %.2f %.0f %.2f %.2f\n", n, w, u + s, m / 1024, b / t, st / t}' |
    tee -a "$OUT/results.txt"
}
check_count() { # topic expected
  local got; got=$("$TOOL" count "$BOOTSTRAP" "$1")
  [[ $got = "$2" ]] || { echo "$1 holds $got records, not $2" >&2; exit 1; }
}
JAVA_CP=(-cp "$KAFKA_TOOLS_CP" -Dlog4j2.configurationFile="$PWD/scripts/kafka/log4j2-quiet.properties")

# ConsumerPerformance commits its group's offsets on the topic: left there, they would go into
# the archives the restores read, one group more each round and run, and each restore would
# commit them all. The bench's restores restore the records; groups left by earlier runs go.
delete_groups() {
  local args=(); for g in "$@"; do args+=(--group "$g"); done
  java "${JAVA_CP[@]}" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
    --bootstrap-server "$BOOTSTRAP" --delete "${args[@]}" >/dev/null 2>&1 || true
}
mapfile -t leftover < <(java "${JAVA_CP[@]}" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
  --bootstrap-server "$BOOTSTRAP" --list 2>/dev/null | grep '^kar-cmp-' || true)
[[ ${#leftover[@]} -gt 0 ]] && delete_groups "${leftover[@]}"

# Not timed: the archives the other jobs read (the uncompressed one is zstd's input, the
# compressed one the restores'), the records for the producers, and a warm page cache.
rm -f "$OUT/none.kar" "$OUT/zstd.kar"
"$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" "${subjects[@]}" --compression none \
  --out "$OUT/none.kar" --json >"$OUT/report-none.json"
"$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" "${subjects[@]}" --out "$OUT/zstd.kar" \
  --json >"$OUT/report-zstd.json"
read -r records bytes < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["records"], r["record_bytes"])' "$OUT/report-none.json")
echo "$TOPIC: $records records, $bytes bytes of keys and values"
# A backup reads every consumer group's offsets (a client each): the figures depend on how many
# the broker holds, so the run says.
groups=$(java "${JAVA_CP[@]}" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
  --bootstrap-server "$BOOTSTRAP" --list 2>/dev/null | grep -vc '^kar-restore\.' || true)
echo "consumer groups on the broker (kar-restore.* progress groups left out): $groups"
if [[ $PAYLOAD = json && $MODE != memory ]]; then
  "$KCAT" -C -b "$BOOTSTRAP" -t "$TOPIC" -o beginning -e -q -f '%k\t%s\n' >"$OUT/records.tsv"
  cut -f2 "$OUT/records.tsv" >"$OUT/values.txt"
fi

backup_jobs() {
  case $1 in
    kcat-drain) run kcat-drain sh -c "'$KCAT' -C -b '$BOOTSTRAP' -t '$TOPIC' -o beginning -e -q -f '%s' >/dev/null" ;;
    kcat-file) run kcat-file sh -c "'$KCAT' -C -b '$BOOTSTRAP' -t '$TOPIC' -o beginning -e -q -f '%k\t%s\n' >'$OUT/kcat-file.tsv'" ;;
    consumer-perf)
      local group=kar-cmp-$RANDOM$RANDOM
      run consumer-perf java -Xmx512M "${JAVA_CP[@]}" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$BOOTSTRAP" \
        --topic "$TOPIC" --messages "$records" --timeout 60000 --group "$group"
      delete_groups "$group" ;;
    zstd) run zstd "$ZSTD" -q -f -3 -T1 "$OUT/none.kar" -o "$OUT/none.kar.zst" ;;
    kar-backup) rm -f "$OUT/b.kar"; run kar-backup "$KAR" backup --bootstrap "$BOOTSTRAP" --topics "$TOPIC" \
      "${subjects[@]}" --out "$OUT/b.kar" ;;
    kar-backup-none) rm -f "$OUT/b.kar"; run kar-backup-none "$KAR" backup --bootstrap "$BOOTSTRAP" \
      --topics "$TOPIC" "${subjects[@]}" --compression none --out "$OUT/b.kar" ;;
  esac
}
producer=(acks=all enable.idempotence=true compression.type=lz4 linger.ms=96 batch.size=1000000)
restore_jobs() { # job round
  local dst=kar-cmp-$1-$2-$RANDOM
  case $1 in
    kcat-produce)
      "$TOOL" create "$BOOTSTRAP" "$dst" 6
      local x=(); for p in "${producer[@]}"; do x+=(-X "$p"); done
      run kcat-produce "$KCAT" -P -b "$BOOTSTRAP" -t "$dst" -K $'\t' "${x[@]}" -l "$OUT/records.tsv"
      check_count "$dst" "$records" ;;
    producer-perf)
      "$TOOL" create "$BOOTSTRAP" "$dst" 6
      # It holds the payload file in memory (as strings and bytes): a heap to fit it.
      run producer-perf env LC_ALL=C java "-Xmx$((BENCH_MB * 4 + 512))M" "${JAVA_CP[@]}" \
        org.apache.kafka.tools.ProducerPerformance --topic "$dst" \
        --num-records "$records" --throughput -1 --payload-file "$OUT/values.txt" \
        --producer-props bootstrap.servers="$BOOTSTRAP" "${producer[@]}"
      check_count "$dst" "$records"
      # Its own timing leaves out loading the payload file: that is the figure compared.
      tail -1 "$OUT/producer-perf.out" | awk -v n=producer-perf-send \
        '{rate = $4; printf "%s %.2f %s\n", n, $1 / rate, "- - - -"}' | tee -a "$OUT/results.txt" ;;
    kar-restore-quick)
      local state; state=$(mktemp -d)
      run kar-restore-quick "$KAR" restore "$OUT/zstd.kar" --bootstrap "$BOOTSTRAP" --map "$TOPIC=$dst" \
        --state "$state" --verify quick
      rm -rf "$state" ;;
    kar-restore)
      local state; state=$(mktemp -d)
      run kar-restore "$KAR" restore "$OUT/zstd.kar" --bootstrap "$BOOTSTRAP" --map "$TOPIC=$dst" --state "$state"
      rm -rf "$state" ;;
  esac
  "$TOOL" delete "$BOOTSTRAP" "$dst"
}

if [[ $MODE = memory ]]; then
  backups=(kar-backup); restores=(kar-restore)
else
  backups=(kcat-drain kcat-file consumer-perf zstd kar-backup kar-backup-none)
  restores=(kar-restore)
  [[ $PAYLOAD = json ]] && restores=(kcat-produce producer-perf kar-restore kar-restore-quick)
fi
started=$(date +%s) stolen_before=$(steal_ticks)
for r in $(seq 0 $((ROUNDS - 1))); do
  echo "round $((r + 1)):"
  n=${#backups[@]}
  for i in $(seq 0 $((n - 1))); do backup_jobs "${backups[$(((i + r) % n))]}"; done
  n=${#restores[@]}
  for i in $(seq 0 $((n - 1))); do restore_jobs "${restores[$(((i + r) % n))]}" "$r"; done
done
echo "the rounds took $(($(date +%s) - started)) s; the host took $((($(steal_ticks) - stolen_before) / TICKS)) s of the VM's CPU time meanwhile (steal, both CPUs)"

python3 benches/compare.py "$OUT/results.txt" "$records" "$bytes" "$(stat -c %s "$OUT/zstd.kar")" "$(stat -c %s "$OUT/none.kar")"
