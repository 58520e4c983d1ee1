# The controller image: the `dovetail` binary alone on distroless, as a non-root user, for
# linux/amd64 and linux/arm64 (the build stage runs on the builder's own platform and
# cross-compiles; no emulation):
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/dovetail:TAG --push .
# Where no Docker engine runs (as in CI here), scripts/image.sh assembles the same runtime image
# from a built binary with no daemon and pushes it with skopeo; tests/install.rs builds it that way
# and inspects it in a registry.

FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
ARG TARGETARCH
# The image's own toolchain, not rust-toolchain.toml's channel (which would install another).
ENV RUSTUP_TOOLCHAIN=1.95.0
# Policies are WebAssembly components embedded in the binary; the other architecture's target,
# C cross compiler and libc for the crates that build C.
RUN set -eux; \
    rustup target add wasm32-wasip2; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; gnu=x86-64 ;; \
      arm64) triple=aarch64-unknown-linux-gnu; gnu=aarch64 ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac; \
    rustup target add "$triple"; \
    if [ "$(dpkg --print-architecture)" != "$TARGETARCH" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends "gcc-${gnu}-linux-gnu" "libc6-dev-${TARGETARCH}-cross"; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    echo "$triple" > /triple
WORKDIR /src
COPY . .
RUN set -eux; \
    triple=$(cat /triple); \
    linker_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER"; \
    if [ "$(dpkg --print-architecture)" != "$TARGETARCH" ]; then \
      export "$linker_var=$(echo "$triple" | sed 's/-unknown//')-gcc"; \
      export "CC_$(echo "$triple" | tr '-' '_')=$(echo "$triple" | sed 's/-unknown//')-gcc"; \
    fi; \
    cargo build --release --locked -p dovetail --bin dovetail --target "$triple"; \
    install -D -m 0755 "target/$triple/release/dovetail" /out/dovetail

# glibc and libgcc, no shell, no package manager; uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/dovetail /usr/local/bin/dovetail
USER 65532:65532
# Kubernetes probes /healthz and /readyz on the health port (the chart sets them); the image has
# no shell or client for a Docker HEALTHCHECK.
ENTRYPOINT ["/usr/local/bin/dovetail"]
CMD ["controller"]
