package volume

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/crypto/pbkdf2"
)

// FormatOptions configure Format.
type FormatOptions struct {
	// Passphrase opens keyslot 0 (for cocoon volumes: the key file's bytes
	// or the key broker resource).
	Passphrase []byte
	// KDF is "argon2id" (default) or "pbkdf2".
	KDF string
	// SectorSize of the data segment (default 4096).
	SectorSize int
	// DataSize is the size of the encrypted data area in bytes.
	DataSize int64
	Label    string
}

// KDF parameters of new keyslots: argon2id at 4 passes over 64 MiB with 2
// lanes (about a second on our machines), or pbkdf2-sha256 at 600k rounds.
const (
	argonTime    = 4
	argonMemory  = 64 << 10
	argonCPUs    = 2
	pbkdf2Rounds = 600000
	digestRounds = 100000
	saltBytes    = 32
)

func uuid4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Format writes a new LUKS2 volume to f (its size becomes the header area
// plus DataSize) and returns the volume key. Callers clear it.
func Format(f *os.File, o FormatOptions) ([]byte, error) {
	if len(o.Passphrase) == 0 {
		return nil, errors.New("an empty passphrase is not allowed")
	}
	if o.SectorSize == 0 {
		o.SectorSize = DefaultSector
	}
	if o.DataSize <= 0 || o.DataSize%int64(o.SectorSize) != 0 {
		return nil, fmt.Errorf("the data size must be a positive multiple of %d bytes", o.SectorSize)
	}
	vk := make([]byte, VolumeKeyBytes)
	if _, err := io.ReadFull(rand.Reader, vk); err != nil {
		return nil, err
	}
	kdf := KDF{Type: "argon2id", Time: argonTime, Memory: argonMemory, CPUs: argonCPUs}
	switch o.KDF {
	case "", "argon2id":
	case "pbkdf2":
		kdf = KDF{Type: "pbkdf2", Hash: "sha256", Iterations: pbkdf2Rounds}
	default:
		return nil, fmt.Errorf("kdf %q: use argon2id or pbkdf2", o.KDF)
	}
	salt := make([]byte, saltBytes)
	_, _ = rand.Read(salt)
	kdf.Salt = b64(salt)
	key, err := deriveKey(kdf, o.Passphrase, VolumeKeyBytes)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	material, err := afSplit(vk, afStripes, sha256.New)
	if err != nil {
		return nil, err
	}
	area := make([]byte, keyslotAreaSize)
	copy(area, material)
	clear(material)
	if err := xtsSectors(key, area, 512, 0, false); err != nil {
		return nil, err
	}
	dsalt := make([]byte, saltBytes)
	_, _ = rand.Read(dsalt)
	digest := pbkdf2.Key(vk, dsalt, digestRounds, 32, sha256.New)
	prio := 1
	m := &Metadata{
		Keyslots: map[string]*Keyslot{"0": {
			Type: "luks2", KeySize: VolumeKeyBytes, Priority: &prio,
			AF:   AF{Type: "luks1", Stripes: afStripes, Hash: "sha256"},
			Area: Area{Type: "raw", Offset: strconv.Itoa(keyslotsOffset), Size: strconv.Itoa(keyslotAreaSize), Encryption: cipherXTSPlain, KeySize: VolumeKeyBytes},
			KDF:  kdf,
		}},
		Tokens: map[string]any{},
		Segments: map[string]*Segment{"0": {
			Type: "crypt", Offset: strconv.Itoa(DataOffset), Size: "dynamic", IVTweak: "0",
			Encryption: cipherXTSPlain, SectorSize: o.SectorSize,
		}},
		Digests: map[string]*Digest{"0": {
			Type: "pbkdf2", Keyslots: []string{"0"}, Segments: []string{"0"}, Hash: "sha256",
			Iterations: digestRounds, Salt: b64(dsalt), Digest: b64(digest),
		}},
		Config: Config{JSONSize: strconv.Itoa(DefaultHdrSize - binHeaderSize), KeyslotsSize: strconv.Itoa(DataOffset - keyslotsOffset)},
	}
	if err := f.Truncate(DataOffset + o.DataSize); err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(area, keyslotsOffset); err != nil {
		return nil, err
	}
	if err := writeHeader(f, m, uuid4(), o.Label, 1); err != nil {
		return nil, err
	}
	return vk, f.Sync()
}
