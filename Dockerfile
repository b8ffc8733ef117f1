# Multi-stage build of the `elastic` binary (docs/deploy.md; cluster/deploy-check.py checks it).
#   docker build -t elastic:0.1.0 .
#   docker run --rm elastic:0.1.0 --help
FROM swift:6.3-bookworm AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libzstd-dev libopenblas-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Resolve dependencies in their own layer so source edits do not refetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product elastic \
    && install -D "$(swift build -c release --show-bin-path)/elastic" /out/elastic

# The runtime: Debian slim (whose /bin/sh runs the compose entrypoints), the libraries the binary
# links (libzstd, OpenBLAS) and the binary; no Swift toolchain (the standard library is static)
# and no CA bundle (every TLS peer is verified against the cluster's own CA).
FROM debian:bookworm-slim
# A fixed uid/gid, so that volumes keep their owner across rebuilds and Kubernetes' runAsUser and
# fsGroup can name it. The mount points exist, owned by it, so that a new named volume mounted
# there starts out writable (Docker copies the owner of the image's directory).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libzstd1 libopenblas0-pthread \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 elastic \
    && useradd --no-log-init --uid 10001 --gid elastic --create-home --home-dir /var/lib/elastic --shell /usr/sbin/nologin elastic \
    && install -d -o elastic -g elastic -m 0755 /var/lib/elastic/controller /var/lib/elastic/worker \
        /var/lib/elastic/bootstrap /var/lib/elastic/shared /var/lib/elastic/shared/checkpoints /var/lib/elastic/shared/datasets
COPY --from=build /out/elastic /usr/local/bin/elastic
USER 10001:10001
WORKDIR /var/lib/elastic
# 7400: the controller (--listen); 7401: a worker's data plane, as cluster/ sets --data-listen.
EXPOSE 7400 7401
ENTRYPOINT ["elastic"]
CMD ["--help"]
