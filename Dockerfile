# syntax=docker/dockerfile:1
#
# One image for every role: `syncfolder server`, `syncfolder controller`, the
# injected sidecar (`syncfolder agent`) and the CLI. The chart and the
# sidecar run it as `command: [syncfolder, <role>]`, found on PATH.
#
#   docker build -t syncfolder/syncfolder:0.1.0 .
#
# The binary is linked statically against musl, so the final image is
# `scratch` plus the binary, CA certificates (for https:// servers and
# PostgreSQL over TLS), a passwd entry for the non-root user and /tmp.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# musl-dev: the C parts (SQLite, ring) link against musl's static libc; binutils: readelf
RUN apk add --no-cache musl-dev binutils ca-certificates
WORKDIR /src
COPY . .
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p syncfolder --locked \
 && install -D -m 0755 target/release/syncfolder /rootfs/usr/local/bin/syncfolder
# a static binary has no interpreter: refuse to ship a dynamic one
RUN if readelf -l /rootfs/usr/local/bin/syncfolder | grep -q 'Requesting program interpreter'; then \
      echo "syncfolder is dynamically linked" >&2; exit 1; \
    fi \
 && /rootfs/usr/local/bin/syncfolder --version
RUN mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && chmod 1777 /rootfs/tmp \
 && echo 'nonroot:x:65532:65532:syncfolder:/tmp:/sbin/nologin' > /rootfs/etc/passwd \
 && echo 'nonroot:x:65532:' > /rootfs/etc/group

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.title="syncfolder" \
      org.opencontainers.image.description="Kubernetes-native file sync: server, controller, sidecar agent and CLI in one binary" \
      org.opencontainers.image.source="https://github.com/syncfolder/syncfolder" \
      org.opencontainers.image.licenses="MIT"
USER 65532:65532
# no ENTRYPOINT: the chart and the sidecar name the program and the role
CMD ["syncfolder", "--help"]
