package tee

import (
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"strings"
)

// Binding names one consumer of a report's REPORT_DATA. Every consumer has
// its own: REPORT_DATA = SHA-512(label || 0x00 || data), so evidence made
// for one consumer never satisfies another's check (the labels hold no NUL,
// so no (label, data) pair hashes the same input as another pair). The
// table in docs/attestation.md lists who produces each and who accepts it.
type Binding string

// The bindings cocoon produces and accepts.
const (
	// BindHostChallenge binds the runtime data of a host request
	// (GetEvidence, `cocoon attest`): the host's freshness challenge. No
	// key broker or attestation service accepts it.
	BindHostChallenge Binding = "cocoon/v1/host-challenge"
	// BindKeyBroker binds the KBS protocol's canonical runtime data
	// {"nonce", "tee-pubkey"}: produced only by the agent's own key broker
	// client, accepted only by the key broker.
	BindKeyBroker Binding = "cocoon/v1/key-broker"
	// BindAttestationService binds the attestation service's canonical
	// structured runtime data (or the raw nonce): accepted only by the
	// attestation service. A host request may have it made only over a
	// nonce the agent wraps itself (never a key).
	BindAttestationService Binding = "cocoon/v1/attestation-service"
	// BindWorkload binds runtime data a container asked for through the
	// in-pod API: for the workload's own relying parties.
	BindWorkload Binding = "cocoon/v1/workload"
)

// Other platforms' bindings: REPORT_DATA is a plain hash of the runtime
// data, zero-padded to 64 bytes. The KBS protocol (Trustee,
// guest-components) hashes the canonical {"additional-evidence", "nonce",
// "tee-pubkey"} with the hash the challenge chose (SHA-384 when its
// extra-params say nothing): a stock KBS client in a pod makes this through
// the workload's raw evidence route (/aa/evidence), and the key broker
// accepts it for composite evidence. Azure (the SKR sidecar, MAA) hashes the
// runtime data with SHA-256: the in-pod /attest/raw and /attest/maa routes,
// accepted by the attestation service's MAA-compatible route. Both are made
// over data a container chooses; none of cocoon's own bindings can equal
// one of these (theirs fill all 64 bytes with a hash of an input that
// starts with a "cocoon/" label, and no container route fills the last 16).
const (
	BindSHA256 Binding = "plain/sha256"
	BindSHA384 Binding = "plain/sha384"
	BindSHA512 Binding = "plain/sha512"
)

// Bindings lists every binding, for diagnosis and tests.
func Bindings() []Binding {
	return []Binding{BindHostChallenge, BindKeyBroker, BindAttestationService, BindWorkload, BindSHA256, BindSHA384, BindSHA512}
}

// Foreign reports whether b is another platform's binding (a plain hash)
// rather than one of cocoon's domain-separated ones.
func (b Binding) Foreign() bool { return strings.HasPrefix(string(b), "plain/") }

// ReportData is the REPORT_DATA that binds data under b.
func (b Binding) ReportData(data []byte) [64]byte {
	var out [64]byte
	switch b {
	case BindSHA256:
		h := sha256.Sum256(data)
		copy(out[:], h[:])
		return out
	case BindSHA384:
		h := sha512.Sum384(data)
		copy(out[:], h[:])
		return out
	case BindSHA512:
		return sha512.Sum512(data)
	}
	h := sha512.New()
	h.Write([]byte(b))
	h.Write([]byte{0})
	h.Write(data)
	h.Sum(out[:0])
	return out
}

// Digest is the hash that binds data under b, unpadded: 32, 48 or 64 bytes
// for the plain bindings, 64 for cocoon's. Where the binding is not
// REPORT_DATA but a value of the hash's own length — an Azure vTPM quote's
// qualifying data — this is what it must equal.
func (b Binding) Digest(data []byte) []byte {
	rd := b.ReportData(data)
	switch b {
	case BindSHA256:
		return rd[:sha256.Size]
	case BindSHA384:
		return rd[:sha512.Size384]
	}
	return rd[:]
}

// ParseBinding accepts a binding's label or its short name (the label's
// last component: host-challenge, key-broker, attestation-service,
// workload, sha256, sha384, sha512).
func ParseBinding(s string) (Binding, error) {
	for _, b := range Bindings() {
		if s == string(b) || s == b.Short() {
			return b, nil
		}
	}
	return "", fmt.Errorf("unknown binding %q; want host-challenge, key-broker, attestation-service, workload or a plain/sha256|sha384|sha512", s)
}

// Short is the binding's last label component (e.g. "host-challenge").
func (b Binding) Short() string {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '/' {
			return string(b[i+1:])
		}
	}
	return string(b)
}

// Identify reports which binding makes reportData from data, if any: it
// names what a piece of evidence was made for when a consumer refuses it.
func Identify(reportData, data []byte) (Binding, bool) {
	for _, b := range Bindings() {
		rd := b.ReportData(data)
		if string(rd[:]) == string(reportData) {
			return b, true
		}
	}
	return "", false
}
