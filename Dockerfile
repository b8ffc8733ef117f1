# Multi-stage build of the `elastic` binary.
#   docker build -t elastic .
#   docker run --rm elastic --help
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

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libzstd1 libopenblas0-pthread ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/elastic elastic
COPY --from=build /out/elastic /usr/local/bin/elastic
USER elastic
WORKDIR /var/lib/elastic
# 7400: the controller; workers' data planes listen where --data-listen says.
EXPOSE 7400
ENTRYPOINT ["elastic"]
CMD ["--help"]
