# coordinate's container image: built in a Rust image, run from a slim Debian one as a
# non-root user, with the data directory a volume.
#
#   docker build --build-arg COORDINATE_COMMIT=$(git rev-parse --short=12 HEAD) -t coordinate .
#   docker run -p 2379:2379 -v coordinate-data:/var/lib/coordinate coordinate
#
# The default command is a single-member cluster serving clients on :2379 (in clear).
# deploy/docker-compose.yml runs three members with peer mTLS.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# `coordinate --version` names this commit (the image holds no .git).
ARG COORDINATE_COMMIT=unknown
ENV COORDINATE_COMMIT=${COORDINATE_COMMIT}
RUN cargo build --release --locked --bin coordinate --bin coordinatectl

FROM debian:bookworm-slim
# The binaries need only glibc, which the slim image has. The user owns its data and /certs
# (where a named volume, initialised from it, takes generated certificates).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/coordinate --shell /usr/sbin/nologin coordinate \
    && mkdir -p /var/lib/coordinate /certs \
    && chown coordinate:coordinate /var/lib/coordinate /certs \
    && chmod 700 /var/lib/coordinate
COPY --from=build /src/target/release/coordinate /src/target/release/coordinatectl /usr/local/bin/
USER coordinate
WORKDIR /var/lib/coordinate
VOLUME ["/var/lib/coordinate"]
EXPOSE 2379 2380
# Healthy while the member knows a leader and can serve linearizable reads (GET /health).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["coordinatectl", "--endpoints", "127.0.0.1:2379", "--timeout", "4", "health"]
ENTRYPOINT ["coordinate"]
CMD ["--data-dir", "/var/lib/coordinate", "--cluster", "http://127.0.0.1:2380", "--listen-client-urls", "http://0.0.0.0:2379"]
