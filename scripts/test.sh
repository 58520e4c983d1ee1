#!/usr/bin/env bash
# The test command: everything CI runs. Builds once (debug), then runs every test of the workspace:
# unit tests, policy tests through the SDK harness, integration tests with real components in
# real wasmtime, and the AWS tests against a moto server the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --all --check
cargo test --workspace --locked
