// Package volume is cocoon's encrypted volumes: LUKS2 (create, unlock, read
// and write sectors) in Go, interoperable with cryptsetup, and the ways to
// open one: dm-crypt where the kernel has it, or a userspace block device
// (FUSE file + loop device) where it does not.
package volume

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// LUKS2 on-disk constants.
const (
	binHeaderSize   = 4096
	DefaultHdrSize  = 16384
	keyslotsOffset  = 2 * DefaultHdrSize
	DataOffset      = 16 << 20 // as cryptsetup: 16 MiB of header and keyslots
	afStripes       = 4000
	VolumeKeyBytes  = 64 // aes-xts-plain64 with AES-256
	DefaultSector   = 4096
	maxJSONBytes    = 4 << 20
	checksumAlgSHA  = "sha256"
	cipherXTSPlain  = "aes-xts-plain64"
	keyslotAreaSize = (VolumeKeyBytes*afStripes + 4095) / 4096 * 4096
)

var (
	magicPrimary   = []byte{'L', 'U', 'K', 'S', 0xba, 0xbe}
	magicSecondary = []byte{'S', 'K', 'U', 'L', 0xba, 0xbe}
)

// ErrWrongKey marks a passphrase that opens no keyslot.
var ErrWrongKey = errors.New("no keyslot opens with this key")

// Metadata is the LUKS2 JSON area (the parts cocoon uses).
type Metadata struct {
	Keyslots map[string]*Keyslot `json:"keyslots"`
	Tokens   map[string]any      `json:"tokens"`
	Segments map[string]*Segment `json:"segments"`
	Digests  map[string]*Digest  `json:"digests"`
	Config   Config              `json:"config"`
}

// Keyslot is a LUKS2 keyslot.
type Keyslot struct {
	Type     string `json:"type"`
	KeySize  int    `json:"key_size"`
	AF       AF     `json:"af"`
	Area     Area   `json:"area"`
	KDF      KDF    `json:"kdf"`
	Priority *int   `json:"priority,omitempty"`
}

// AF is the anti-forensic splitter of a keyslot.
type AF struct {
	Type    string `json:"type"`
	Stripes int    `json:"stripes"`
	Hash    string `json:"hash"`
}

// Area is where a keyslot's material lies.
type Area struct {
	Type       string `json:"type"`
	Offset     string `json:"offset"`
	Size       string `json:"size"`
	Encryption string `json:"encryption"`
	KeySize    int    `json:"key_size"`
}

// KDF derives a keyslot key from a passphrase.
type KDF struct {
	Type       string `json:"type"`
	Hash       string `json:"hash,omitempty"`
	Iterations int    `json:"iterations,omitempty"`
	Time       int    `json:"time,omitempty"`
	Memory     int    `json:"memory,omitempty"`
	CPUs       int    `json:"cpus,omitempty"`
	Salt       string `json:"salt"`
}

// Segment is an encrypted data segment.
type Segment struct {
	Type       string   `json:"type"`
	Offset     string   `json:"offset"`
	Size       string   `json:"size"`
	IVTweak    string   `json:"iv_tweak"`
	Encryption string   `json:"encryption"`
	SectorSize int      `json:"sector_size"`
	Flags      []string `json:"flags,omitempty"`
}

// Digest verifies a volume key.
type Digest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations int      `json:"iterations"`
	Salt       string   `json:"salt"`
	Digest     string   `json:"digest"`
}

// Config is the LUKS2 config object.
type Config struct {
	JSONSize     string   `json:"json_size"`
	KeyslotsSize string   `json:"keyslots_size"`
	Flags        []string `json:"flags,omitempty"`
	Requirements any      `json:"requirements,omitempty"`
}

// Header is a parsed, checksum-verified LUKS2 header.
type Header struct {
	HdrSize   uint64
	SeqID     uint64
	Label     string
	UUID      string
	Metadata  Metadata
	Recovered bool // the primary copy was bad and the secondary was used
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// parseCopy parses and verifies one header copy from area (hdr_size bytes).
func parseCopy(area []byte, magic []byte, wantOffset uint64) (*Header, error) {
	if len(area) < binHeaderSize {
		return nil, errors.New("truncated header")
	}
	if !bytes.Equal(area[:6], magic) {
		return nil, errors.New("no LUKS2 magic")
	}
	if v := binary.BigEndian.Uint16(area[6:8]); v != 2 {
		return nil, fmt.Errorf("LUKS version %d is not supported (only LUKS2)", v)
	}
	h := &Header{HdrSize: binary.BigEndian.Uint64(area[8:16]), SeqID: binary.BigEndian.Uint64(area[16:24]),
		Label: cstr(area[24:72]), UUID: cstr(area[168:208])}
	switch h.HdrSize {
	case 16384, 32768, 65536, 131072, 262144, 524288, 1048576, 2097152, 4194304:
	default:
		return nil, fmt.Errorf("invalid header size %d", h.HdrSize)
	}
	if uint64(len(area)) < h.HdrSize {
		return nil, fmt.Errorf("truncated header: %d of %d bytes", len(area), h.HdrSize)
	}
	if off := binary.BigEndian.Uint64(area[256:264]); off != wantOffset {
		return nil, fmt.Errorf("header offset %d, expected %d", off, wantOffset)
	}
	if alg := cstr(area[72:104]); alg != checksumAlgSHA {
		return nil, fmt.Errorf("checksum algorithm %q is not supported", alg)
	}
	c := make([]byte, h.HdrSize)
	copy(c, area[:h.HdrSize])
	want := append([]byte{}, c[448:448+32]...)
	clear(c[448:512])
	if got := sha256.Sum256(c); !bytes.Equal(got[:], want) {
		return nil, errors.New("header checksum mismatch")
	}
	js := bytes.TrimRight(c[binHeaderSize:], "\x00")
	if err := json.Unmarshal(js, &h.Metadata); err != nil {
		return nil, fmt.Errorf("header JSON: %w", err)
	}
	if err := h.Metadata.check(); err != nil {
		return nil, err
	}
	return h, nil
}

func (m *Metadata) check() error {
	if len(m.Segments) == 0 || m.Segments["0"] == nil {
		return errors.New("no data segment 0")
	}
	s := m.Segments["0"]
	if s.Type != "crypt" {
		return fmt.Errorf("segment type %q is not supported", s.Type)
	}
	if s.Encryption != cipherXTSPlain {
		return fmt.Errorf("cipher %q is not supported (cocoon supports %s)", s.Encryption, cipherXTSPlain)
	}
	if s.SectorSize != 512 && s.SectorSize != 1024 && s.SectorSize != 2048 && s.SectorSize != 4096 {
		return fmt.Errorf("sector size %d is not supported", s.SectorSize)
	}
	if m.Config.Requirements != nil {
		return errors.New("the header has requirements (e.g. an online reencryption) that cocoon does not support")
	}
	return nil
}

// ReadHeader reads both header copies from r and returns the valid one with
// the highest sequence id; a damaged primary is recovered from the
// secondary.
func ReadHeader(r io.ReaderAt) (*Header, error) {
	buf := make([]byte, 2*4194304)
	n, err := r.ReadAt(buf[:2*DefaultHdrSize], 0)
	if n < binHeaderSize {
		return nil, fmt.Errorf("not a LUKS2 image: %d bytes (truncated?): %w", n, err)
	}
	buf = buf[:n]
	// The primary's hdr_size tells where the secondary starts; if the
	// primary is damaged, try the known sizes.
	var primary *Header
	var perr error
	size := uint64(DefaultHdrSize)
	if bytes.Equal(buf[:6], magicPrimary) {
		if s := binary.BigEndian.Uint64(buf[8:16]); s >= DefaultHdrSize && s <= 4194304 {
			size = s
		}
	}
	area, err := readN(r, 0, int(size))
	if err == nil {
		primary, perr = parseCopy(area, magicPrimary, 0)
	} else {
		perr = err
	}
	var secondary *Header
	var serr error
	for _, s := range []uint64{size, 16384, 32768, 65536, 131072, 262144, 524288, 1048576, 2097152, 4194304} {
		a, err := readN(r, int64(s), int(s))
		if err != nil {
			serr = err
			continue
		}
		if secondary, serr = parseCopy(a, magicSecondary, s); serr == nil {
			break
		}
	}
	switch {
	case primary != nil && secondary != nil:
		if secondary.SeqID > primary.SeqID {
			secondary.Recovered = true
			return secondary, nil
		}
		return primary, nil
	case primary != nil:
		return primary, nil
	case secondary != nil:
		secondary.Recovered = true
		return secondary, nil
	}
	return nil, fmt.Errorf("not a usable LUKS2 image: primary header: %v; secondary header: %v", perr, serr)
}

func readN(r io.ReaderAt, off int64, n int) ([]byte, error) {
	b := make([]byte, n)
	m, err := r.ReadAt(b, off)
	if m == n {
		return b, nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("read %d bytes at %d: %w", n, off, err)
}

func atoi(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }

// DataSegment returns the data offset, size (-1: to the end) and sector size.
func (h *Header) DataSegment() (offset, size int64, sector int, err error) {
	s := h.Metadata.Segments["0"]
	if offset, err = atoi(s.Offset); err != nil {
		return 0, 0, 0, fmt.Errorf("segment offset %q: %w", s.Offset, err)
	}
	size = -1
	if s.Size != "dynamic" {
		if size, err = atoi(s.Size); err != nil {
			return 0, 0, 0, fmt.Errorf("segment size %q: %w", s.Size, err)
		}
	}
	if tw, _ := atoi(s.IVTweak); tw != 0 {
		return 0, 0, 0, errors.New("a non-zero iv_tweak is not supported")
	}
	return offset, size, s.SectorSize, nil
}

// writeHeader writes both copies of the header with metadata m.
func writeHeader(w io.WriterAt, m *Metadata, uuid, label string, seqid uint64) error {
	js, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(js) >= DefaultHdrSize-binHeaderSize {
		return errors.New("LUKS2 metadata too large")
	}
	var salt [64]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return err
	}
	for i, magic := range [][]byte{magicPrimary, magicSecondary} {
		area := make([]byte, DefaultHdrSize)
		copy(area[0:6], magic)
		binary.BigEndian.PutUint16(area[6:8], 2)
		binary.BigEndian.PutUint64(area[8:16], DefaultHdrSize)
		binary.BigEndian.PutUint64(area[16:24], seqid)
		copy(area[24:72], label)
		copy(area[72:104], checksumAlgSHA)
		copy(area[104:168], salt[:])
		copy(area[168:208], uuid)
		binary.BigEndian.PutUint64(area[256:264], uint64(i*DefaultHdrSize))
		copy(area[binHeaderSize:], js)
		sum := sha256.Sum256(area)
		copy(area[448:], sum[:])
		if _, err := w.WriteAt(area, int64(i*DefaultHdrSize)); err != nil {
			return err
		}
	}
	return nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func unb64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(strings.TrimSpace(s)) }
