# syntax=docker/dockerfile:1
# rackform's container image: build with the Rust toolchain, run on a small Debian.
#
#   docker build -t rackform:0.1.0 .
#
# The binary links the system OpenSSL (libssl3); libgit2 and libssh2 are vendored and built
# with cc, so the runtime needs only ca-certificates and libssl3 besides glibc and zlib.
# No test builds this file (no Docker engine runs where the tests do); tests/deploy.rs
# checks its basic facts: two stages, pinned tags, a numeric non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY schemas ./schemas
COPY examples ./examples
RUN cargo build --release --locked --bin rackform \
 && install -m 0755 target/release/rackform /usr/local/bin/rackform

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 rackform \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /var/lib/rackform \
      --shell /usr/sbin/nologin rackform \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/rackform
COPY --from=build /usr/local/bin/rackform /usr/local/bin/rackform
USER 65532:65532
WORKDIR /var/lib/rackform
EXPOSE 8080
ENTRYPOINT ["rackform"]
CMD ["run"]
