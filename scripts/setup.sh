#!/usr/bin/env bash
# Installs what building and testing Dovetail needs beyond a Rust toolchain. Idempotent.
set -euo pipefail

# Policies are WebAssembly components built for wasm32-wasip2.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
