# syntax=docker/dockerfile:1
# Image of photo-policy-operator: a release build on Debian bookworm, run on
# distroless cc (glibc, no shell, no package manager) as the nonroot user
# 65532. Build it with any OCI builder, for example:
#   docker build -t registry.example.com/photo-policy-operator:0.1.0 .
# The Graph emulator has its own target, for test clusters only:
#   docker build --target graph-emulator -t graph-emulator:0.1.0 .
# The build command below is the one CI runs (.ci/run), so a change that
# breaks it fails CI even though CI runs no container engine.

ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/photo-policy-operator target/release/graph-emulator /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS graph-emulator
COPY --from=build /out/graph-emulator /usr/local/bin/graph-emulator
USER 65532:65532
# The emulator listens on loopback unless told otherwise; in a pod, other
# pods reach it only with --listen 0.0.0.0:8080 --allow-remote.
ENTRYPOINT ["/usr/local/bin/graph-emulator"]

# The last stage is the default target: the operator alone.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/photo-policy-operator /usr/local/bin/photo-policy-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/photo-policy-operator"]
CMD ["run"]
