#!/usr/bin/env bash
# Builds the controller image without a Docker daemon and, with --push, copies it to a registry.
#
#   bash scripts/image.sh [--binary PATH] [--tag TAG] [--push DEST] [--skopeo-option=value…]
#
# Options of `skopeo copy` pass through in their one-word form (`--dest-tls-verify=false`,
# `--dest-creds=USER:PASSWORD`).
#
# The image holds what the Dockerfile's runtime stage holds (the `dovetail` binary, glibc and
# libgcc, the CA bundle, the non-root user 65532, no shell), assembled from this machine's files as
# an OCI image layout by scripts/oci_image.py, for this machine's architecture (amd64 or arm64; run
# it on each, or use the Dockerfile with `docker buildx build --platform linux/amd64,linux/arm64`
# where a builder runs). Without --binary it builds the release binary first (~20 min cold).
# DEST is any skopeo destination, e.g.
#   docker://111122223333.dkr.ecr.us-east-1.amazonaws.com/dovetail:0.1.0
#     (after: aws ecr get-login-password | skopeo login --username AWS --password-stdin 111122223333.dkr.ecr.us-east-1.amazonaws.com)
#   docker://127.0.0.1:5000/dovetail:dev --dest-tls-verify=false   (a registry on loopback)
# Needs python3, skopeo (Debian: apt-get install skopeo) and binutils' strip.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag="$version"
push=""
out="target/image/dovetail-oci"
extra=()
while (($#)); do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --push) push=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        --*=*) extra+=("$1"); shift ;;
        --*) echo "image.sh: unknown option $1 (skopeo options in their --option=value form; see --help)" >&2; exit 2 ;;
        *) echo "image.sh: unexpected argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    cargo build --release --locked -p dovetail --bin dovetail
    binary=target/release/dovetail
fi
revision=$(git rev-parse HEAD 2>/dev/null || true)
python3 scripts/oci_image.py --binary "$binary" --out "$out" --tag "$tag" \
    --version "$version" --revision "$revision"
if [ -n "$push" ]; then
    command -v skopeo >/dev/null || { echo "image.sh: skopeo is needed to push (apt-get install skopeo)" >&2; exit 1; }
    skopeo copy --quiet ${extra[@]+"${extra[@]}"} "oci:$out:$tag" "$push"
    echo "pushed $push"
fi
