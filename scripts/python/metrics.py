"""Parses Prometheus metrics with the Prometheus project's own Python client, as a scraper would:
`metrics.py openmetrics` (OpenMetrics 1.0 text) or `metrics.py text` (the text format 0.0.4 of
node_exporter's textfile collector) reads standard input and prints one JSON array of samples:
{"family", "type", "name", "labels", "value"}. A text the parser refuses exits non-zero with its
error (tests/metrics.rs)."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as text


def main():
    parse = {"openmetrics": openmetrics, "text": text}[sys.argv[1]]
    samples = []
    for family in parse(sys.stdin.read()):
        for s in family.samples:
            samples.append(
                {
                    "family": family.name,
                    "type": family.type,
                    "name": s.name,
                    "labels": s.labels,
                    "value": s.value,
                }
            )
    json.dump(samples, sys.stdout)


if __name__ == "__main__":
    main()
