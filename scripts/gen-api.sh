#!/usr/bin/env bash
# Regenerates the agent API's committed Go code (api/agent/v1) from
# agent.proto: installs protoc (Debian's protobuf-compiler, 3.21.12 on
# bookworm) if missing and builds the two Go plugins at the versions the
# committed files were made with, then runs `go generate`. Needs root for
# apt-get the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
  apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
fi
bin=${XDG_CACHE_HOME:-$HOME/.cache}/cocoon-gen-api
GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOBIN=$bin go install github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@v1.2.10
PATH=$bin:$PATH go generate ./api/agent/v1
git status --short api/agent/v1
