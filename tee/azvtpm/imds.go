package azvtpm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"cocoon.dev/cocoon/tee"
)

// IMDS is Azure's instance metadata service, which serves a CVM its VCEK
// and quotes TD reports. Untested on Azure: written from Azure's
// documentation of the two routes.
type IMDS struct {
	// URL is the service's base (default http://169.254.169.254).
	URL  string
	HTTP *http.Client
}

func (m *IMDS) do(ctx context.Context, method, path string, body []byte, out any) error {
	base := m.URL
	if base == "" {
		base = "http://169.254.169.254"
	}
	hc := m.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Metadata", "true")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(b, out)
}

// VCEK returns the VCEK certificate (DER) of this CVM's processor.
func (m *IMDS) VCEK(ctx context.Context) ([]byte, error) {
	var r struct {
		VCEKCert string `json:"vcekCert"`
	}
	if err := m.do(ctx, http.MethodGet, "/metadata/THIM/amd/certification", nil, &r); err != nil {
		return nil, fmt.Errorf("azure IMDS VCEK: %w", err)
	}
	blk, _ := pem.Decode([]byte(r.VCEKCert))
	if blk == nil {
		return nil, errors.New("azure IMDS VCEK: no PEM certificate in vcekCert")
	}
	return blk.Bytes, nil
}

// TDQuote has a TDREPORT quoted.
func (m *IMDS) TDQuote(ctx context.Context, report []byte) ([]byte, error) {
	body, _ := json.Marshal(map[string]string{"report": base64.RawURLEncoding.EncodeToString(report)})
	var r struct {
		Quote string `json:"quote"`
	}
	if err := m.do(ctx, http.MethodPost, "/acc/tdquote", body, &r); err != nil {
		return nil, fmt.Errorf("azure IMDS TD quote: %w", err)
	}
	q, err := base64.RawURLEncoding.DecodeString(trimPad(r.Quote))
	if err != nil {
		return nil, fmt.Errorf("azure IMDS TD quote: %w", err)
	}
	return q, nil
}

func trimPad(s string) string {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	return s
}

// Detect opens /dev/tpmrm0 and returns an attester when this is an Azure
// CVM (the vTPM holds an HCL report); nil, nil when it is not.
func Detect(m *IMDS) (*Attester, error) {
	if _, err := os.Stat("/dev/tpmrm0"); err != nil {
		return nil, nil
	}
	t, err := linuxtpm.Open("/dev/tpmrm0")
	if err != nil {
		return nil, nil
	}
	kind, err := hclKind(t)
	if err != nil {
		_ = t.Close()
		return nil, nil
	}
	if kind == tee.AzureTDX {
		return NewTDX(t, m.TDQuote), nil
	}
	return NewSNP(t, m.VCEK), nil
}

// hclKind reads the HCL report's type: SEV-SNP (2) or TDX (4).
func hclKind(t transport.TPM) (tee.Kind, error) {
	b, err := ReadNV(t, HCLReportIndex, maxHCLReport)
	if err != nil {
		return "", err
	}
	const rtOff = 0x20 + 1184
	if len(b) < rtOff+12 || string(b[:4]) != "HCLA" {
		return "", errors.New("not an HCL report")
	}
	switch b[rtOff+8] {
	case 2:
		return tee.AzureSNP, nil
	case 4:
		return tee.AzureTDX, nil
	}
	return "", fmt.Errorf("HCL report type %d", b[rtOff+8])
}
