package volume

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/pbkdf2"
)

func hashFunc(name string) (func() hash.Hash, error) {
	switch name {
	case "sha256":
		return sha256.New, nil
	case "sha512":
		return sha512.New, nil
	case "sha1":
		return sha1.New, nil
	}
	return nil, fmt.Errorf("hash %q is not supported", name)
}

// deriveKey runs a keyslot's KDF.
func deriveKey(k KDF, pass []byte, n int) ([]byte, error) {
	salt, err := unb64(k.Salt)
	if err != nil {
		return nil, fmt.Errorf("kdf salt: %w", err)
	}
	switch k.Type {
	case "pbkdf2":
		h, err := hashFunc(k.Hash)
		if err != nil {
			return nil, err
		}
		if err := checkKDF(k, 0); err != nil {
			return nil, err
		}
		return pbkdf2.Key(pass, salt, k.Iterations, n, h), nil
	case "argon2id", "argon2i":
		if err := checkKDF(k, 0); err != nil {
			return nil, err
		}
		if k.Type == "argon2i" {
			return argon2.Key(pass, salt, uint32(k.Time), uint32(k.Memory), uint8(k.CPUs), uint32(n)), nil
		}
		return argon2.IDKey(pass, salt, uint32(k.Time), uint32(k.Memory), uint8(k.CPUs), uint32(n)), nil
	}
	return nil, fmt.Errorf("kdf %q is not supported", k.Type)
}

// diffuse is LUKS's AF diffusion: each hash-sized block is replaced by
// H(be32(index) || block).
func diffuse(buf []byte, h func() hash.Hash) {
	ds := h().Size()
	for i := 0; i*ds < len(buf); i++ {
		end := min((i+1)*ds, len(buf))
		hh := h()
		var iv [4]byte
		binary.BigEndian.PutUint32(iv[:], uint32(i))
		hh.Write(iv[:])
		hh.Write(buf[i*ds : end])
		copy(buf[i*ds:end], hh.Sum(nil))
	}
}

func afSplit(key []byte, stripes int, h func() hash.Hash) ([]byte, error) {
	bs := len(key)
	out := make([]byte, bs*stripes)
	acc := make([]byte, bs)
	for i := 0; i < stripes-1; i++ {
		s := out[i*bs : (i+1)*bs]
		if _, err := io.ReadFull(rand.Reader, s); err != nil {
			return nil, err
		}
		subtle.XORBytes(acc, acc, s)
		diffuse(acc, h)
	}
	subtle.XORBytes(out[(stripes-1)*bs:], acc, key)
	return out, nil
}

func afMerge(material []byte, bs, stripes int, h func() hash.Hash) []byte {
	acc := make([]byte, bs)
	for i := 0; i < stripes-1; i++ {
		subtle.XORBytes(acc, acc, material[i*bs:(i+1)*bs])
		diffuse(acc, h)
	}
	subtle.XORBytes(acc, acc, material[(stripes-1)*bs:stripes*bs])
	return acc
}

// xtsSectors en/decrypts buf in place as aes-xts-plain64 with sectorSize
// data units, the IV of each being its offset in 512-byte sectors plus
// firstIV (dm-crypt's plain64 without iv_large_sectors).
func xtsSectors(key, buf []byte, sectorSize int, firstIV uint64, decrypt bool) error {
	c, err := newXTS(key)
	if err != nil {
		return fmt.Errorf("aes-xts: %w", err)
	}
	return xtsWith(c, buf, sectorSize, firstIV, decrypt)
}

// parallelBytes is the size above which sectors are processed on every
// core (x/crypto/xts runs one block at a time).
const parallelBytes = 64 << 10

// xtsWith is xtsSectors with a prepared cipher.
func xtsWith(c *xtsCipher, buf []byte, sectorSize int, firstIV uint64, decrypt bool) error {
	if n := runtime.GOMAXPROCS(0); n > 1 && len(buf) >= parallelBytes && len(buf)%sectorSize == 0 {
		sectors := len(buf) / sectorSize
		per := (sectors + n - 1) / n
		var wg sync.WaitGroup
		for i := 0; i < sectors; i += per {
			j := min(i+per, sectors)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = xtsSerial(c, buf[i*sectorSize:j*sectorSize], sectorSize, firstIV+uint64(i*sectorSize/512), decrypt)
			}()
		}
		wg.Wait()
		return nil
	}
	return xtsSerial(c, buf, sectorSize, firstIV, decrypt)
}

func xtsSerial(c *xtsCipher, buf []byte, sectorSize int, firstIV uint64, decrypt bool) error {
	if len(buf)%sectorSize != 0 {
		return fmt.Errorf("%d bytes are not whole %d-byte sectors", len(buf), sectorSize)
	}
	step := uint64(sectorSize / 512)
	t := make([]byte, sectorSize)
	for i := 0; i*sectorSize < len(buf); i++ {
		c.crypt(buf[i*sectorSize:(i+1)*sectorSize], firstIV+uint64(i)*step, decrypt, t)
	}
	return nil
}

// checkCosts refuses a header whose unlock would cost more than the bounds
// allow, before any key derivation: too many keyslots for the digest, or a
// keyslot's or the digest's KDF parameters out of range. The error names
// the keyslot and the parameter.
func (h *Header) checkCosts(d *Digest, memBudgetKiB int64) error {
	if len(d.Keyslots) > MaxKeyslotsTried {
		return fmt.Errorf("%w: the digest lists %d keyslots; cocoon tries at most %d", ErrHeaderLimit, len(d.Keyslots), MaxKeyslotsTried)
	}
	if err := checkKDF(KDF{Type: "pbkdf2", Iterations: d.Iterations}, 0); err != nil {
		return fmt.Errorf("%w: digest: %w", ErrHeaderLimit, err)
	}
	for _, id := range d.Keyslots {
		ks := h.Metadata.Keyslots[id]
		if ks == nil {
			continue
		}
		if err := checkKDF(ks.KDF, memBudgetKiB); err != nil {
			return fmt.Errorf("%w: keyslot %s: %w", ErrHeaderLimit, id, err)
		}
	}
	return nil
}

// ErrHeaderLimit marks a LUKS2 header refused for the cost it would set.
var ErrHeaderLimit = errors.New("LUKS2 header past cocoon's limits")

// Unlock finds a keyslot that opens with pass and returns the volume key.
func (h *Header) Unlock(r io.ReaderAt, pass []byte) ([]byte, error) {
	d := h.digestFor("0")
	if d == nil {
		return nil, errors.New("no digest covers segment 0")
	}
	if err := h.checkCosts(d, argon2MemoryBudget()); err != nil {
		return nil, err
	}
	var lastErr error = ErrWrongKey
	for _, id := range d.Keyslots {
		ks := h.Metadata.Keyslots[id]
		if ks == nil || ks.Type != "luks2" {
			continue
		}
		vk, err := h.openKeyslot(r, ks, pass)
		if err != nil {
			lastErr = fmt.Errorf("keyslot %s: %w", id, err)
			continue
		}
		ok, err := checkDigest(d, vk)
		if err != nil {
			return nil, err
		}
		if ok {
			return vk, nil
		}
		clear(vk)
	}
	if errors.Is(lastErr, ErrWrongKey) {
		return nil, ErrWrongKey
	}
	return nil, fmt.Errorf("%w (%v)", ErrWrongKey, lastErr)
}

func (h *Header) digestFor(segment string) *Digest {
	for _, d := range h.Metadata.Digests {
		for _, s := range d.Segments {
			if s == segment {
				return d
			}
		}
	}
	return nil
}

func checkDigest(d *Digest, vk []byte) (bool, error) {
	if d.Type != "pbkdf2" {
		return false, fmt.Errorf("digest type %q is not supported", d.Type)
	}
	hf, err := hashFunc(d.Hash)
	if err != nil {
		return false, err
	}
	salt, err := unb64(d.Salt)
	if err != nil {
		return false, err
	}
	want, err := unb64(d.Digest)
	if err != nil {
		return false, err
	}
	if err := checkKDF(KDF{Type: "pbkdf2", Iterations: d.Iterations}, 0); err != nil {
		return false, fmt.Errorf("digest: %w", err)
	}
	got := pbkdf2.Key(vk, salt, d.Iterations, len(want), hf)
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

func (h *Header) openKeyslot(r io.ReaderAt, ks *Keyslot, pass []byte) ([]byte, error) {
	if ks.AF.Type != "luks1" {
		return nil, fmt.Errorf("AF type %q is not supported", ks.AF.Type)
	}
	if ks.Area.Type != "raw" || ks.Area.Encryption != cipherXTSPlain {
		return nil, fmt.Errorf("keyslot area %s/%s is not supported", ks.Area.Type, ks.Area.Encryption)
	}
	hf, err := hashFunc(ks.AF.Hash)
	if err != nil {
		return nil, err
	}
	off, err := strconv.ParseInt(ks.Area.Offset, 10, 64)
	if err != nil {
		return nil, err
	}
	if ks.KeySize <= 0 || ks.KeySize > 128 {
		return nil, fmt.Errorf("keyslot key_size = %d; cocoon accepts 1 to 128", ks.KeySize)
	}
	if ks.AF.Stripes < 1 || ks.AF.Stripes > MaxAFStripes {
		return nil, fmt.Errorf("af stripes = %d; cocoon accepts 1 to %d", ks.AF.Stripes, MaxAFStripes)
	}
	n := ks.KeySize * ks.AF.Stripes
	n = (n + 511) / 512 * 512
	material, err := readN(r, off, n)
	if err != nil {
		return nil, fmt.Errorf("keyslot area: %w", err)
	}
	key, err := deriveKey(ks.KDF, pass, ks.Area.KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	if err := xtsSectors(key, material, 512, 0, true); err != nil {
		return nil, err
	}
	vk := afMerge(material, ks.KeySize, ks.AF.Stripes, hf)
	clear(material)
	return vk, nil
}
