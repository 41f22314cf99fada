// Package testdata finds the workspace's shared test data (real attestation
// evidence captured on hardware), which lives in a shared/ folder beside the
// repository checkout.
package testdata

import (
	"os"
	"path/filepath"
)

// EvidenceDir returns the directory of shared/testdata/evidence: from
// $COCOON_EVIDENCE, else the first shared/ found walking up from the
// current directory.
func EvidenceDir() string {
	if d := os.Getenv("COCOON_EVIDENCE"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		p := filepath.Join(dir, "shared", "testdata", "evidence")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
