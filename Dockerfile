# The videostreams image: built on Debian 12 exactly as scripts/dev builds,
# run from a slim Debian 12 with the binary, the shared libraries it links
# (and what they depend on), a non-root user and no compiler.
#
#   docker build -t videostreams:dev .
#
# tests/k8s checks this file against the built binary and the manifests
# (label manifests): every library `ldd build/videostreams` lists comes from
# a package installed below, nothing installed below is unneeded, no
# compiler, a numeric non-root USER equal to the manifests' runAsUser, the
# ENTRYPOINT equal to the manifests' command, EXPOSE equal to their ports.

FROM debian:12 AS build
WORKDIR /src
COPY . .
# scripts/dev installs the build packages with apt-get and builds Release
# in ./build with the same cmake commands as `scripts/dev test`.
RUN scripts/dev build

FROM debian:12-slim
# The packages of the libraries the binary links to; apt brings what they
# depend on (OpenSSL, zlib, brotli, Kerberos and LDAP for libpq, ...).
# libc6, libgcc-s1 and libstdc++6 are in the base image already; they are
# listed because the binary needs them. /bin/sh, grep and sleep (the init
# container and the preStop hook) are essential packages of the base image.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libboost-json1.81.0 \
      libc6 \
      libcaf-core0.17 \
      libcaf-io0.17 \
      libcpp-httplib0.11 \
      libgcc-s1 \
      libpq5 \
      libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 videostreams \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin videostreams
COPY --from=build /src/build/videostreams /usr/local/bin/videostreams
USER 10001:10001
# HTTP API, operations (/healthz, /readyz, /metrics), cluster (middleman).
EXPOSE 8080 9090 4370
ENTRYPOINT ["/usr/local/bin/videostreams"]
