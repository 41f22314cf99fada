package azvtpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"
)

// BindInitData binds digest (the SHA-256 of the pod policy) into the init
// data PCR the way guest-components does on Azure: on a fresh PCR 8 it
// extends it with digest; otherwise PCR 8 must already be that one
// extension (the agent restarted with the same policy). Relying parties pin
// PCR 8 = SHA-256(32 zero bytes || digest) in their reference values; a
// host that hands the agent another policy changes PCR 8 or is refused
// here. It returns the PCR value.
func (a *Attester) BindInitData(digest [32]byte) ([]byte, error) {
	return BindInitData(a.tpm, digest)
}

// InitDataPCRValue is PCR 8 after the single extension with digest.
func InitDataPCRValue(digest [32]byte) []byte {
	h := sha256.New()
	h.Write(make([]byte, 32))
	h.Write(digest[:])
	return h.Sum(nil)
}

// BindInitData is Attester.BindInitData on any TPM transport.
func BindInitData(t transport.TPM, digest [32]byte) ([]byte, error) {
	pcrs, err := ReadPCRs(t)
	if err != nil {
		return nil, err
	}
	want := InitDataPCRValue(digest)
	cur := pcrs[InitDataPCR]
	if bytes.Equal(cur, make([]byte, 32)) {
		if err := ExtendPCR(t, InitDataPCR, digest); err != nil {
			return nil, err
		}
		if pcrs, err = ReadPCRs(t); err != nil {
			return nil, err
		}
		cur = pcrs[InitDataPCR]
	}
	if !bytes.Equal(cur, want) {
		return cur, fmt.Errorf("PCR %d holds %s, not the measurement of this policy (%s): this VM was bound to another policy, or something else extended PCR %d",
			InitDataPCR, hex.EncodeToString(cur), hex.EncodeToString(want), InitDataPCR)
	}
	return cur, nil
}

// RuntimePCR is the PCR the runtime event log extends. guest-components
// uses PCR 17 by default, but a PC-client TPM refuses extends of PCRs 17-22
// at locality 0, where the guest's TPM driver runs (TPM_RC_LOCALITY,
// measured with swtpm), and PCRs 16 and 23 can be reset, which would let
// events be erased. PCR 15 is extended at locality 0, cannot be reset and
// is not extended by firmware, shim or GRUB; a guest whose boot uses it
// (systemd's measured UKI boot) fails the replay, visibly.
const RuntimePCR = 15

// ExtendRuntime extends the runtime event log's PCR with an event's digest.
func (a *Attester) ExtendRuntime(_ context.Context, digest [32]byte) error {
	return ExtendPCR(a.tpm, RuntimePCR, digest)
}
