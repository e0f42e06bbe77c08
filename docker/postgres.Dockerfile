# PostgreSQL 15 from Debian bookworm, on the same base image as everything else (nothing is pulled).
ARG BASE=depthsweep-base:bookworm
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p "$PGDATA" /run/postgresql && chown postgres:postgres "$PGDATA" /run/postgresql && chmod 700 "$PGDATA"
COPY docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
USER postgres
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
