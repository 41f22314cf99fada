// Package vectors finds the real attestation evidence the tests verify:
// reports and quotes captured on AMD and Intel hardware, kept in the
// repository under attest/testdata/evidence with their provenance
// (attest/testdata/evidence/README.md).
package vectors

import (
	"os"
	"path/filepath"
	"runtime"
)

// EvidenceDir is attest/testdata/evidence of this checkout ($COCOON_EVIDENCE
// overrides it, to run the verifiers on other captures).
func EvidenceDir() string {
	if d := os.Getenv("COCOON_EVIDENCE"); d != "" {
		return d
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "attest", "testdata", "evidence")
}
