# syntax=docker/dockerfile:1
# shoal-tracker image. Build from the repository root:
#   docker build -f deploy/docker/tracker.Dockerfile -t shoal-tracker .
# The runtime is distroless `cc` (glibc, libgcc, CA certificates; no shell, no package
# manager), running as user 65532 (distroless "nonroot"). Configure it with SHOAL_TRACKER_*
# variables or a TOML file (SHOAL_TRACKER_CONFIG); see docs/tracker.md.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shoal-tracker --bin shoal-tracker \
    && install -D -m 0755 target/release/shoal-tracker /out/shoal-tracker

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="shoal-tracker" \
      org.opencontainers.image.description="Shoal tracker: swarm membership, neighbour selection and fleet byte metrics for peer-assisted HLS/DASH delivery" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/tracker.md" \
      org.opencontainers.image.source="https://example.invalid/shoal"
COPY --from=build /out/shoal-tracker /usr/local/bin/shoal-tracker
# Listen on every interface inside the container; logs as JSON lines for collectors.
ENV SHOAL_TRACKER_LISTEN=0.0.0.0:7070 \
    SHOAL_TRACKER_LOG_FORMAT=json
USER 65532:65532
EXPOSE 7070
# The binary is its own probe (no shell or curl in the image): GET /healthz on the listen
# address. /healthz fails while the store (Redis) is unreachable, so "unhealthy" also means
# "not ready"; orchestrators with separate probes use /healthz for readiness.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/shoal-tracker", "--healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/shoal-tracker"]
