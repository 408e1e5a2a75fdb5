# syntax=docker/dockerfile:1
# rollkeeper images, built from one Dockerfile:
#   docker build --target manager -t rollkeeper-manager .   (the operator; nonroot)
#   docker build --target agent   -t rollkeeper-agent .     (the node agent; root)
# `make docker-build` builds both with Docker. `make images` builds the same images without a
# Docker engine (hack/ocibuild reads the final stages below), so keep those stages to what it
# understands: FROM scratch, COPY, USER, WORKDIR, ENV, LABEL, ENTRYPOINT/CMD in exec form.
# Every binary is static (CGO_ENABLED=0).

FROM golang:1.26 AS builder
WORKDIR /src
COPY go.mod go.sum ./
# go.mod replaces one module with a patched copy kept here (see its PATCHES.md).
COPY third_party/ third_party/
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w" -o /out/manager ./cmd/manager && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w" -o /out/agent ./cmd/agent

# The operator: talks to the API server and ZooKeeper only. A distroless-style root: users and
# groups (hack/image/rootfs), CA certificates for https origins, the binary.
FROM scratch AS manager
COPY hack/image/rootfs/ /
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/manager /manager
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/manager"]

# The node agent runs as root: it starts and stops host services, pins pages (CAP_IPC_LOCK)
# and owns its state directory on the host. The host services it runs come from their
# artifacts (static binaries or whatever the artifact unpacks), not from this image, so the
# image holds nothing but the agent; exec health checks run commands from the artifact or the
# host paths the pod mounts.
FROM scratch AS agent
COPY hack/image/rootfs/ /
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/agent /agent
USER 0:0
WORKDIR /
ENTRYPOINT ["/agent"]
