# nstrace as a container image: a static binary on an empty base.
#
#   docker build -t nstrace .
#   docker run --rm --pid=host --cap-drop=ALL --cap-add=BPF --cap-add=PERFMON \
#     --cap-add=SYS_ADMIN --cap-add=SYS_PTRACE --cap-add=DAC_READ_SEARCH \
#     -v /sys/kernel/btf:/sys/kernel/btf:ro -v /sys/kernel/tracing:/sys/kernel/tracing \
#     nstrace
#
# deploy/daemonset.yaml runs it on every node of a Kubernetes cluster. The
# build needs nothing from the network but Go modules (GOPROXY); BUILDER names
# the Go image to build with (the tests use one made offline, with a filled
# module cache).
ARG BUILDER=golang:1.26-bookworm

FROM ${BUILDER} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The generated BPF objects are committed: no clang here.
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.commit=${COMMIT}" -o /out/nstrace ./cmd/nstrace

FROM scratch
COPY --from=build /out/nstrace /nstrace
# JSON lines on stdout for the log pipeline; diagnostics on stderr.
ENTRYPOINT ["/nstrace"]
CMD ["-o", "json"]
