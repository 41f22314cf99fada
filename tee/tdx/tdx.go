// Package tdx is the Intel TDX attester: quotes through go-tdx-guest
// (configfs-tsm, then /dev/tdx_guest).
package tdx

import (
	"context"
	"fmt"

	"github.com/google/go-tdx-guest/client"

	"cocoon.dev/cocoon/tee"
)

// Attester gets TDX quotes from the hardware.
type Attester struct {
	qp any
}

// New opens the TDX quote provider of this guest.
func New() (*Attester, error) {
	if qp, err := client.GetQuoteProvider(); err == nil && qp.IsSupported() == nil {
		return &Attester{qp: qp}, nil
	}
	d, err := client.OpenDevice()
	if err != nil {
		return nil, fmt.Errorf("TDX: no configfs-tsm or /dev/tdx_guest: %w", err)
	}
	return &Attester{qp: d}, nil
}

// Kind implements tee.Attester.
func (*Attester) Kind() tee.Kind { return tee.TDX }

// Evidence implements tee.Attester.
func (a *Attester) Evidence(_ context.Context, reportData [64]byte) (*tee.Evidence, error) {
	q, err := client.GetRawQuote(a.qp, reportData)
	if err != nil {
		return nil, fmt.Errorf("TDX quote: %w", err)
	}
	return &tee.Evidence{TEE: tee.TDX, Report: q}, nil
}
