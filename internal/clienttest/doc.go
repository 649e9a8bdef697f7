// Package clienttest drives the real `aivonx serve` binary, in front of fake
// Ollama nodes, with the clients people actually use: the official Go package
// github.com/ollama/ollama/api (goclient_test.go) and, through Node.js, the
// npm packages ollama, openai and @langchain/ollama (node_test.go and the
// *.test.mjs scripts next to it). It holds tests only; `go test
// ./internal/clienttest/` runs everything, installing the pinned npm packages
// with `npm ci` when node_modules is missing or stale.
package clienttest
