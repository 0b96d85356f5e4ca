# A small image holding the cashew binary alone:
#   docker build -t cashew .
#   docker run -v /etc/cashew:/etc/cashew:ro -p 22121:22121 cashew -c /etc/cashew/nutcracker.yml
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cashew && strip target/release/cashew

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/cashew /usr/local/bin/cashew
COPY conf/nutcracker.yml /etc/cashew/nutcracker.yml
EXPOSE 22121 22222
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/cashew", "status", "--admin", "127.0.0.1:22223"]
ENTRYPOINT ["/usr/local/bin/cashew"]
CMD ["-c", "/etc/cashew/nutcracker.yml", "--admin", "127.0.0.1:22223"]
