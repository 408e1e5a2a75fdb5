# syntax=docker/dockerfile:1
# rollkeeper images, built from one Dockerfile:
#   docker build --target manager -t rollkeeper-manager .   (the operator; distroless, nonroot)
#   docker build --target agent   -t rollkeeper-agent .     (the node agent; runs host services)
# `make docker-build` builds both. Every binary is static (CGO_ENABLED=0).

FROM golang:1.26 AS builder
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w" -o /out/rollkeeper-manager ./cmd/manager && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w" -o /out/rollkeeper-agent ./cmd/agent

# The node agent supervises host services as its own child processes, fetches artifacts and
# runs exec health checks, so it needs a real userland (sh, tar for exec checks and scripts,
# CA certificates for https artifacts, nsenter for a backend that enters the host's
# namespaces). The chart runs it privileged with hostNetwork and hostPID, as root, with its
# state directory on a hostPath.
FROM debian:bookworm-slim AS agent
RUN apt-get update && \
    apt-get install -y --no-install-recommends ca-certificates util-linux procps && \
    rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/rollkeeper-agent /usr/local/bin/rollkeeper-agent
ENTRYPOINT ["/usr/local/bin/rollkeeper-agent"]

# The operator: talks to the API server and ZooKeeper only.
FROM gcr.io/distroless/static:nonroot AS manager
WORKDIR /
COPY --from=builder /out/rollkeeper-manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
