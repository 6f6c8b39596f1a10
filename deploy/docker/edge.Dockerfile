# syntax=docker/dockerfile:1
# shoal-edge image (the edge proxy). Build from the repository root:
#   docker build -f deploy/docker/edge.Dockerfile -t shoal-edge .
# The runtime is distroless `cc` (no shell), running as user 65532 (distroless "nonroot").
# Configure it with SHOAL_EDGE_* variables or a TOML file (SHOAL_EDGE_CONFIG); see
# docs/edge-proxy.md. Mount a volume at /var/lib/shoal-edge to keep the node's key across
# restarts (neighbours then know it by the same fingerprint).

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shoal-edge-proxy --bin shoal-edge \
    && install -D -m 0755 target/release/shoal-edge /out/shoal-edge \
    && install -d -m 0700 /out/state

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="shoal-edge" \
      org.opencontainers.image.description="Shoal edge proxy: a player's local front that fetches segments from peers first and the origin CDN otherwise" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/edge-proxy.md" \
      org.opencontainers.image.source="https://example.invalid/shoal"
COPY --from=build /out/shoal-edge /usr/local/bin/shoal-edge
COPY --from=build --chown=65532:65532 /out/state /var/lib/shoal-edge
# The player front (/metrics, /healthz) on every interface of the container, the peer
# server on a fixed port so it can be published; logs as JSON lines.
ENV SHOAL_EDGE_LISTEN=0.0.0.0:8080 \
    SHOAL_EDGE_PEER_LISTEN=0.0.0.0:9000 \
    SHOAL_EDGE_DATA_DIR=/var/lib/shoal-edge \
    SHOAL_EDGE_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080 9000
VOLUME ["/var/lib/shoal-edge"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/shoal-edge", "--healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/shoal-edge"]
