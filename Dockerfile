# Aivonx: one static binary in a distroless image, run as non-root.
#
#   docker build -t aivonx .
#   docker run -p 8000:8000 -e AIVONX_NODES=http://ollama:11434 aivonx
#
# `docker run` serves HTTP on :8000 with the embedded store in /data (mount
# a volume there to keep it); DATABASE_URL and REDIS_URL switch to the
# shared mode, and any command of the binary can replace the default one
# (`docker run aivonx worker`, `docker run aivonx migrate up`).
#
# The same image is a Lambda container image: under Lambda the binary sees
# AWS_LAMBDA_RUNTIME_API and runs the Lambda loop instead of listening, as
# the role in AIVONX_LAMBDA_ROLE (serve, worker or migrate; default serve).
# Lambda wants a single-platform image without attestations:
#
#   docker buildx build --platform linux/arm64 --provenance=false -t aivonx:lambda .
#
# (BuildKit's provenance turns the push into an OCI index, which Lambda
# rejects.) Lambda needs the shared mode (its file system is read-only but
# for /tmp), so set DATABASE_URL and REDIS_URL on the function.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# lambda.norpc leaves out the retired go1.x RPC mode, which cannot stream.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -tags lambda.norpc -ldflags "-s -w -X main.version=$VERSION" -o /out/aivonx ./cmd/aivonx \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/aivonx /aivonx
COPY --from=build --chown=65532:65532 /out/data /data
ENV AIVONX_DATA_DIR=/data
# New goroutines start on the runtime's fixed 2 KiB stack instead of the
# average it has seen: with thousands of open streams that average is set
# by the deep request goroutines, and net/http's per-connection background
# readers, which need far less, would each start on 8 KiB. Measured at
# 5,000 streams: ~20 MB less stack, ~10% less resident memory.
ENV GODEBUG=adaptivestackstart=0
# Numeric, so that Kubernetes runAsNonRoot can verify it (65532 = nonroot).
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/aivonx"]
CMD ["serve"]
