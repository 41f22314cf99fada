package attest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

func simEnclave() sim.Enclave {
	return sim.Enclave{MRENCLAVE: sha256.Sum256([]byte("enclave build 7")), MRSIGNER: sha256.Sum256([]byte("signer")), ISVProdID: 3, ISVSVN: 5}
}

// TestSimSGXQuoteThroughVerify: an SGX quote from the simulated TEE, in an
// envelope, verifies under the binding asked for when the sim is trusted —
// and its claims say sim — and is refused otherwise, for another consumer,
// as a debug enclave, and against SGX reference values it does not meet.
func TestSimSGXQuoteThroughVerify(t *testing.T) {
	ctx := context.Background()
	a := authority(t)
	data := []byte(`{"nonce":"n","tee-pubkey":{}}`)
	quote := func(e sim.Enclave, b tee.Binding) *tee.Evidence {
		q, err := a.SGXQuote(e, b.ReportData(data))
		if err != nil {
			t.Fatal(err)
		}
		return &tee.Evidence{TEE: tee.SGX, Report: q}
	}
	roots := a.RootsPEM()
	ok := Options{TrustSim: true, SimRoots: roots, Binding: tee.BindKeyBroker, BoundData: data}
	e := simEnclave()
	c, err := Verify(ctx, quote(e, tee.BindKeyBroker), ok)
	if err != nil {
		t.Fatal(err)
	}
	if c.TEE != tee.Sim || c.SGX == nil || c.SGX.MRENCLAVE != hex.EncodeToString(e.MRENCLAVE[:]) || c.SGX.ISVSVN != 5 || c.Measurement != c.SGX.MRENCLAVE {
		t.Fatalf("claims %+v %+v", c, c.SGX)
	}
	prod := uint16(3)
	dbg := e
	dbg.Debug = true
	for _, tc := range []struct {
		name string
		ev   *tee.Evidence
		o    Options
		want string
	}{
		{"untrusted sim", quote(e, tee.BindKeyBroker), Options{Binding: tee.BindKeyBroker, BoundData: data}, "does not chain to Intel's SGX Root CA"},
		{"other consumer", quote(e, tee.BindWorkload), ok, "made for another consumer"},
		{"debug enclave", quote(dbg, tee.BindKeyBroker), ok, "DEBUG enclave"},
		{"mrenclave", quote(e, tee.BindKeyBroker), withRef(ok, &ReferenceValues{SGX: &SGXReference{MRENCLAVE: []string{strings.Repeat("00", 32)}}}), "sgx.mrenclave"},
		{"isv svn", quote(e, tee.BindKeyBroker), withRef(ok, &ReferenceValues{SGX: &SGXReference{ISVProdID: &prod, MinISVSVN: 6}}), "sgx.isv_svn: found 5, expected at least 6"},
		{"pcrs on sgx", quote(e, tee.BindKeyBroker), withRef(ok, &ReferenceValues{PCRs: map[int][]string{0: {"00"}}}), "has none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Verify(ctx, tc.ev, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
	// Every byte of the signed part and of the signatures matters.
	raw := quote(e, tee.BindKeyBroker).Report
	for _, off := range []int{0x10, 48 + 64, 48 + 320, 436 + 10, 436 + 100, 436 + 200, 436 + 600} {
		bad := append([]byte(nil), raw...)
		bad[off] ^= 1
		if _, err := Verify(ctx, &tee.Evidence{TEE: tee.SGX, Report: bad}, ok); err == nil {
			t.Errorf("a flip at %d verified", off)
		}
	}
}

func withRef(o Options, r *ReferenceValues) Options { o.Reference = r; return o }
