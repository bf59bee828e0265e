# s3connect's container image: a static-enough Rust binary on a distroless base with CA
# certificates (for S3 and the platform API), running as a non-root user.
#   docker build -t <registry>/s3connect:<version> . && docker push <registry>/s3connect:<version>

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
RUN cargo build --release --locked --bin s3connect

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/s3connect /usr/local/bin/s3connect
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/s3connect"]
CMD ["operator", "--leader-election"]
