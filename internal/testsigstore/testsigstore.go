// Package testsigstore makes keyless Sigstore signatures for tests, as
// `cosign sign` makes them with a Fulcio certificate, from sigstore-go's
// in-memory Sigstore (real CAs, logs, keys and signatures; nothing leaves
// the process).
package testsigstore

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	v1 "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/encoding/protojson"
)

// BundleMediaType is the Sigstore bundle version cosign v3 writes.
const BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// The identity and issuer of the signatures tests make.
const (
	Identity = "ci@example.com"
	Issuer   = "https://issuer.example"
)

// KeylessBundle makes what `cosign sign` makes with a Fulcio certificate:
// a bundle with the leaf certificate, a DSSE in-toto statement about
// digest, a timestamp authority's timestamp and a Rekor entry with its
// inclusion proof — all from sigstore-go's in-memory Sigstore (real keys,
// real signatures). It returns the bundle and the trusted root that
// vouches for its CAs and logs.
func KeylessBundle(t testing.TB, vs *ca.VirtualSigstore, identity, digest, predicateType string, withTSA bool) []byte {
	t.Helper()
	stmt, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"digest": map[string]string{"sha256": strings.TrimPrefix(digest, "sha256:")}}},
		"predicateType": predicateType, "predicate": map[string]any{},
	})
	if err != nil {
		t.Fatal(err)
	}
	ent, err := vs.AttestAtTime(identity, Issuer, stmt, time.Now().Add(time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		t.Fatal(err)
	}
	env := sc.EnvelopeContent().RawEnvelope()
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	var sigs []*protodsse.Signature
	for _, s := range env.Signatures {
		raw, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, &protodsse.Signature{Sig: raw, Keyid: s.KeyID})
	}
	tss, err := ent.Timestamps()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ent.TlogEntries()
	if err != nil {
		t.Fatal(err)
	}
	var tles []*v1.TransparencyLogEntry
	for _, e := range entries {
		// The in-memory log leaves out the entry's kind and version,
		// which a bundle carries: they are the body's.
		tle := e.TransparencyLogEntry()
		var kv struct {
			Kind       string `json:"kind"`
			APIVersion string `json:"apiVersion"`
		}
		if err := json.Unmarshal(tle.CanonicalizedBody, &kv); err != nil {
			t.Fatal(err)
		}
		tle.KindVersion = &v1.KindVersion{Kind: kv.Kind, Version: kv.APIVersion}
		// And its promise of inclusion (the log's signed timestamp, what
		// verifiers take the signing time from without a TSA).
		set, err := vs.RekorSignPayload(tlog.RekorPayload{
			Body: base64.StdEncoding.EncodeToString(tle.CanonicalizedBody), IntegratedTime: tle.IntegratedTime,
			LogIndex: tle.LogIndex, LogID: hex.EncodeToString(tle.LogId.KeyId),
		})
		if err != nil {
			t.Fatal(err)
		}
		tle.InclusionPromise = &v1.InclusionPromise{SignedEntryTimestamp: set}
		tles = append(tles, tle)
	}
	var rfc []*protocommon.RFC3161SignedTimestamp
	if !withTSA {
		tss = nil
	}
	for _, ts := range tss {
		rfc = append(rfc, &protocommon.RFC3161SignedTimestamp{SignedTimestamp: ts})
	}
	b, err := protojson.Marshal(&protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:                   &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
			TlogEntries:               tles,
			TimestampVerificationData: &protobundle.TimestampVerificationData{Rfc3161Timestamps: rfc},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType, Signatures: sigs}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TrustedRoot is the trusted_root.json of vs (its Fulcio CA, Rekor log and,
// withTSA, its timestamp authority).
func TrustedRoot(t testing.TB, vs *ca.VirtualSigstore, withTSA bool) string {
	t.Helper()
	// The in-memory Sigstore names its log by the ID in hex, where a
	// trusted_root.json has the ID's bytes.
	logs := vs.RekorLogs()
	for _, l := range logs {
		id, err := hex.DecodeString(string(l.ID))
		if err != nil {
			t.Fatal(err)
		}
		l.ID = id
	}
	var tsas []root.TimestampingAuthority
	if withTSA {
		tsas = vs.TimestampingAuthorities()
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, vs.FulcioCertificateAuthorities(), nil, tsas, logs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
