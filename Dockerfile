# One image definition for both services. The binaries are built on the host
#   cargo build --release -p problemsolver-poller -p problemsolver-webhook-worker
# and staged in dist/ (the only part of the build context, see .dockerignore):
#   mkdir -p dist && cp "$CARGO_TARGET_DIR"/release/problemsolver-poller dist/
#   docker build --build-arg BINARY=problemsolver-poller \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg VERSION=<tag> \
#     -t <registry>/problemsolver-poller:<tag> .
# RUNTIME_BASE must provide glibc and libgcc_s (what a Rust binary links); production uses
# distroless cc, the sandbox its locally made 127.0.0.1:5000/psctl-base:bookworm.
# A tag can move under the same name: production builds pin the base by digest with
#   --build-arg RUNTIME_BASE_DIGEST=sha256:<64 hex>
# (from `docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot`), which makes the
# reference `<RUNTIME_BASE>@sha256:…`: the digest is what is pulled, the tag stays for readers.
# Left empty (the sandbox, local builds), the tag alone is used.
# Nothing else is installed: no shell is needed, no HEALTHCHECK (Kubernetes probes /health
# and /ready), and the root filesystem can be mounted read-only.
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG RUNTIME_BASE_DIGEST=""
FROM ${RUNTIME_BASE}${RUNTIME_BASE_DIGEST:+@}${RUNTIME_BASE_DIGEST}

# Which binary of dist/ this image runs: problemsolver-poller or problemsolver-webhook-worker.
ARG BINARY
ARG BINARY_DIR=dist
ARG REVISION=unknown
ARG VERSION=0.0.0-dev
ARG SOURCE=https://github.com/problemsolver/psctl
ARG CREATED=""

LABEL org.opencontainers.image.title="${BINARY}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="problemsolver"

# Root-owned and not writable by the runtime user. A missing BINARY fails here, naming the
# path, rather than producing an image without a program.
COPY ${BINARY_DIR}/${BINARY:-BINARY-build-arg-is-required} /usr/local/bin/service

# The distroless "nonroot" user; numeric so that runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/service"]
