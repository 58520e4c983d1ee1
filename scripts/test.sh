#!/usr/bin/env bash
# The test command: everything CI runs. Builds once (debug), then runs every test of the workspace:
# unit tests, policy tests through the SDK harness, integration tests with real components in
# real wasmtime, and the AWS tests against a moto server the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The Python tools of the tests (moto, checkov, …) come from the project's virtual environment.
export PATH="$PWD/.venv/bin:$PATH"
cargo fmt --all --check
# CI builds once from a clean clone: incremental caches would only double the target's size on disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
# The end-to-end tests also run `dovetail controller` as its own process (killed, SIGTERMed,
# two replicas): the binary is built beside them first.
# `bench-cluster` as the test crate asks for it, so that both builds share one compile of dovetail.
cargo build -p dovetail --bin dovetail --features bench-cluster --locked
cargo test --workspace --locked
