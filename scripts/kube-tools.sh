#!/usr/bin/env bash
# Builds the Kubernetes control-plane pieces cocoon's kubelet test drives,
# from the Go module proxy, into the tools cache (default
# /var/tmp/cocoon-tools/bin; first argument or COCOON_TOOLS to change it):
# kubelet and kube-apiserver v1.34.4 (through a scratch module that replaces
# Kubernetes' 31 staging modules with their v0.34.4 releases, as the
# Kubernetes module itself cannot be required directly) and etcd v3.6.4.
# Each is built once; ~10 minutes cold on 2 cores.
# Prints the directory.
set -euo pipefail
dir=${1:-${COCOON_TOOLS:-/var/tmp/cocoon-tools}/bin}
mkdir -p "$dir"
k8s_version=v1.34.4
staging_version=v0.34.4
etcd_version=v3.6.4
stamp="$dir/.kube-versions"
want="kubernetes $k8s_version etcd $etcd_version"
if [ -x "$dir/kubelet" ] && [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] &&
   [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$dir"
  exit 0
fi
echo "building kubelet and kube-apiserver $k8s_version and etcd $etcd_version into $dir (once) ..." >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
mkdir etcd && (cd etcd && go mod init cocoon.dev/etcd-build >/dev/null 2>&1 &&
  go get "go.etcd.io/etcd/server/v3@$etcd_version" >/dev/null 2>&1 &&
  CGO_ENABLED=0 go build -o "$dir/etcd" go.etcd.io/etcd/server/v3)
mkdir k8s && cd k8s
go mod init cocoon.dev/kube-build >/dev/null 2>&1
staging="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller"
for m in $staging; do
  go mod edit -replace "k8s.io/$m=k8s.io/$m@$staging_version"
done
go mod edit -require "k8s.io/kubernetes@$k8s_version"
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
go mod tidy >/dev/null 2>&1
CGO_ENABLED=0 go build -o "$dir/kubelet" k8s.io/kubernetes/cmd/kubelet
CGO_ENABLED=0 go build -o "$dir/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "$want" > "$stamp"
echo "$dir"
