// Package agentv1 is the host <-> cocoon-agent API: protobuf messages served
// over ttrpc. The generated files are committed; `go generate` remakes them
// (needs protoc, protoc-gen-go and protoc-gen-go-ttrpc on PATH;
// scripts/gen-api.sh installs them and runs it).
package agentv1

//go:generate protoc --go_out=paths=source_relative:. --go-ttrpc_out=paths=source_relative:. agent.proto
