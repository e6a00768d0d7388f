# Sourced by the benches: installs (once, idempotently) the baselines that are not the project's
# own and sets their paths:
#   KCAT             kcat, Debian's package (librdkafka's command-line client)
#   KAFKA_TOOLS_CP   a classpath with Apache Kafka's kafka-tools (ConsumerPerformance,
#                    ProducerPerformance) at the broker's version, from Maven Central
#   ZSTD             the zstd command, Debian's package
#   TIME             GNU time (wall, CPU and peak RSS of a whole process), Debian's package
CACHE=${KAR_CACHE:-$HOME/.cache/kar}
bench_apt() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  local sudo=""; ((EUID == 0)) || sudo="sudo"
  echo "bench: installing $2 (Debian)" >&2
  $sudo apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
bench_apt kcat kcat
bench_apt zstd zstd
[[ -x /usr/bin/time ]] || bench_apt /usr/bin/time time
KCAT=$(command -v kcat)
ZSTD=$(command -v zstd)
TIME=/usr/bin/time
KAFKA_TOOLS=$CACHE/kafka-tools-4.1.1
if [[ ! -f $KAFKA_TOOLS/.complete ]]; then
  echo "bench: resolving kafka-tools from Maven Central into $KAFKA_TOOLS" >&2
  rm -rf "$KAFKA_TOOLS.partial"
  mvn -q -B -f "$(dirname "${BASH_SOURCE[0]}")/kafka-tools/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_TOOLS.partial/libs" >&2
  touch "$KAFKA_TOOLS.partial/.complete"
  rm -rf "$KAFKA_TOOLS"
  mv "$KAFKA_TOOLS.partial" "$KAFKA_TOOLS"
fi
KAFKA_TOOLS_CP="$KAFKA_TOOLS/libs/*"
