# syntax=docker/dockerfile:1
#
# One image with the programs: `worker` (the entrypoint), `producer` and
# `gateway` (the HTTP API).
#   docker build -t idempay .
#   docker run --rm idempay --help
#   docker run --rm --entrypoint producer idempay --help
#   docker run --rm --entrypoint gateway idempay --help
# docker-compose.yml builds it for the worker, gateway and producer services.

ARG GO_VERSION=1.26

# TODO(pin): pin both base images by digest (FROM image:tag@sha256:...), so
# that a rebuild takes exactly the bytes that were reviewed. The digests
# could not be looked up from the machine this was written on (no access to
# the container registries); on a machine with Docker:
#   docker buildx imagetools inspect golang:1.26-bookworm --format '{{.Manifest.Digest}}'
#   docker buildx imagetools inspect gcr.io/distroless/static-debian12:nonroot --format '{{.Manifest.Digest}}'
# then write FROM golang:${GO_VERSION}-bookworm@sha256:<digest> and
# FROM gcr.io/distroless/static-debian12:nonroot@sha256:<digest>, and let
# Dependabot or Renovate move them (docs/security.md, "Not done").
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS TARGETARCH
# What --version prints, as make build stamps it: the build context has no
# .git (.dockerignore), so the caller passes it, e.g.
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) .
# (make up does, through docker-compose.yml).
ARG VERSION=dev
# CGO off: static binaries that run on distroless/static with no libc.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w -X github.com/idempay/idempay/internal/cli.Version=${VERSION}" \
      -o /out/ ./cmd/worker ./cmd/producer ./cmd/gateway

# distroless/static: no shell, no package manager, CA certificates and a
# non-root user (uid 65532) only. Hence no curl for health checks: the
# programs check themselves (worker --healthcheck, gateway --healthcheck).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/worker /out/producer /out/gateway /usr/local/bin/
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/worker"]
