#!/usr/bin/env bash
# What building Dovetail needs beyond a Rust toolchain (the simulator runs on this alone).
# Idempotent.
set -euo pipefail

# Policies are WebAssembly components built for wasm32-wasip2.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
