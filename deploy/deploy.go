// Package deploy holds cocoon's Kubernetes manifests (the YAML files beside
// it), embedded for the commands that write them.
package deploy

import _ "embed"

//go:embed trust-services.yaml
var trustServices string

// TrustServices is deploy/trust-services.yaml: the key broker and the
// attestation service as replicated Deployments on PostgreSQL.
func TrustServices() string { return trustServices }
