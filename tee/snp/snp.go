// Package snp is the AMD SEV-SNP attester: reports from the guest's secure
// processor through go-sev-guest (configfs-tsm first, then /dev/sev-guest),
// with the extended report's certificate table when the host provides it.
package snp

import (
	"context"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"

	"cocoon.dev/cocoon/tee"
)

// Attester gets SNP reports from the hardware.
type Attester struct {
	qp client.QuoteProvider
}

// New opens the SNP quote provider of this guest.
func New() (*Attester, error) {
	qp, err := client.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("SEV-SNP: no configfs-tsm or /dev/sev-guest: %w", err)
	}
	return &Attester{qp: qp}, nil
}

// Kind implements tee.Attester.
func (*Attester) Kind() tee.Kind { return tee.SNP }

// Evidence implements tee.Attester.
func (a *Attester) Evidence(_ context.Context, reportData [64]byte) (*tee.Evidence, error) {
	att, err := client.GetQuoteProto(a.qp, reportData)
	if err != nil {
		return nil, fmt.Errorf("SEV-SNP report: %w", err)
	}
	raw, err := abi.ReportToAbiBytes(att.GetReport())
	if err != nil {
		return nil, fmt.Errorf("SEV-SNP report: %w", err)
	}
	ev := &tee.Evidence{TEE: tee.SNP, Report: raw, Certs: map[string][]byte{}}
	chain := att.GetCertificateChain()
	for role, der := range map[string][]byte{"vcek": chain.GetVcekCert(), "vlek": chain.GetVlekCert(), "ask": chain.GetAskCert(), "ark": chain.GetArkCert()} {
		if len(der) > 0 {
			ev.Certs[role] = der
		}
	}
	return ev, nil
}
