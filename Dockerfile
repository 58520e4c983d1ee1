# The controller image: the `dovetail` binary alone on distroless, as a non-root user.
#   docker build -t dovetail .
# CI cannot run a Docker engine here: it builds the same binary (`cargo build --release --locked
# -p dovetail --bin dovetail`) and checks this file with checkov.

FROM rust:1.95-bookworm AS build
# Policies are WebAssembly components embedded in the binary.
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dovetail --bin dovetail \
    && install -D -m 0755 target/release/dovetail /out/dovetail

# glibc and libgcc, no shell, no package manager; uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/dovetail /usr/local/bin/dovetail
USER 65532:65532
# Kubernetes probes /healthz and /readyz on the health port (the chart sets them); the image has
# no shell or client for a Docker HEALTHCHECK.
ENTRYPOINT ["/usr/local/bin/dovetail"]
CMD ["controller"]
