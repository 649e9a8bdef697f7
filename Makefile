# Aivonx. `make help` lists the targets.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO      ?= go

.PHONY: help run build test test-go lint bench bench-select clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## run the proxy on the embedded default (nodes: AIVONX_NODES or --node, else a local Ollama)
	$(GO) run ./cmd/aivonx serve

build: ## build bin/aivonx (static)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/aivonx ./cmd/aivonx

test: lint ## run every test (starts throwaway Postgres and Redis unless AIVONX_TEST_* are set)
	$(GO) run ./internal/testenv/withservices -- $(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -count=1 -run '^TestStreamFitsInitialStack$$' ./app/ # the race detector deepens stacks

lint: ## gofmt, go vet and the import rules of the layout
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@bad=$$($(GO) list -deps ./app/fleet | grep '^github.com/aivonx/aivonx/' | grep -v '^github.com/aivonx/aivonx/app/fleet$$'); \
	  if [ -n "$$bad" ]; then echo "app/fleet must import only the standard library: $$bad"; exit 1; fi
	@bad=$$($(GO) list -f '{{.ImportPath}}: {{join .Imports " "}}' ./infra/... | grep -E ' github.com/aivonx/aivonx/(app|worker|cmd)( |/|$$)' | grep -v 'app/fleet'); \
	  if [ -n "$$bad" ]; then echo "infra may import only app/fleet from this module: $$bad"; exit 1; fi

bench: bench-select ## load benchmark: direct vs nginx vs aivonx (embedded, and with Redis leases when AIVONX_TEST_* are set)
	$(GO) run ./internal/testenv/withservices -- $(GO) run ./cmd/loadbench -duration 6s -concurrency 1,32,256 -streams 5000

bench-select: ## selection micro-benchmark (ns/op, allocs/op at 10 and 1,000 nodes)
	$(GO) test -run '^$$' -bench . -benchmem ./app/fleet/

# sam build (BuildMethod: makefile) runs build-<LogicalId> with ARTIFACTS_DIR set.
build-ProxyFunction build-WorkerFunction build-MigrateFunction:
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -trimpath -tags lambda.norpc -ldflags "$(LDFLAGS)" -o $(ARTIFACTS_DIR)/bootstrap ./cmd/aivonx

sam-build: ## build the Lambda functions with AWS SAM
	sam build

sam-deploy: ## deploy the SAM stack (guided the first time)
	sam deploy --guided

clean: ## remove build output
	rm -rf bin .aws-sam
