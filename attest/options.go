package attest

import (
	"errors"
	"net/http"
	"time"

	"github.com/google/go-sev-guest/kds"

	"cocoon.dev/cocoon/tee"
)

// Options configure Verify.
type Options struct {
	// Now is the verification time for certificate and collateral validity
	// (zero: the current time). Old captured evidence verifies "as of" a
	// time inside its certificates' validity.
	Now time.Time
	// Offline disables every network fetch (AMD KDS, Intel PCS) and CRL
	// checks: certificates and collateral must come with the evidence or
	// the options.
	Offline bool
	// AllowDebug accepts guests whose policy allows debugging.
	AllowDebug bool
	// TrustSim accepts sim evidence signed by SimRoots (PEM: ASK then ARK).
	TrustSim bool
	SimRoots []byte
	// ReportData, when set, must equal the report's REPORT_DATA.
	ReportData []byte
	// Binding is the one REPORT_DATA binding this caller accepts (see
	// tee.Binding). With BoundData set, REPORT_DATA must be
	// Binding.ReportData(BoundData); otherwise the envelope's runtime data,
	// when it has some, must be bound so. Evidence bound for another
	// consumer is refused with a reason that names it.
	Binding tee.Binding
	// BoundData is the data the caller expects bound under Binding (e.g. the
	// KBS protocol's canonical runtime data).
	BoundData []byte
	// MinTCB is the minimum SNP TCB (reported TCB, by component).
	MinTCB *kds.TCBParts
	// VMPL, when set, is the required SNP VMPL.
	VMPL *int
	// Reference values to check the claims against.
	Reference *ReferenceValues
	// CacheDir caches certificates and collateral fetched from AMD KDS and
	// Intel PCS ("" = no cache).
	CacheDir string
	// Client fetches from AMD KDS and Intel PCS (nil: a default client).
	Client *http.Client
	// TDXCollateralDir holds Intel PCS responses saved to files for offline
	// TCB evaluation: TDX (tcbInfo, qeIdentity, pckcrl, rootcrl.der) and
	// SGX (the TCB info of the platform's FMSPC, the QE identity).
	TDXCollateralDir string
}

// ErrVerification marks evidence that failed verification (as opposed to a
// usage error).
var ErrVerification = errors.New("verification failed")

func (o *Options) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}
