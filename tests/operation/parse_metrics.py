"""Parses an OpenMetrics text exposition (stdin) with the Prometheus Python client's parser
and prints every sample as JSON lines: {"name", "labels", "value"}. A malformed exposition
raises, and the test that ran this fails with the parser's message."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value}))
