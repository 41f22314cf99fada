package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// ParseSize reads sizes like 512M, 2G, 1048576.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := int64(1)
	for suf, m := range map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40} {
		if v, ok := strings.CutSuffix(strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I"), suf); ok {
			s, mult = v, m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M, G or T suffix", s)
	}
	return n * mult, nil
}

// CreateOptions configure Create.
type CreateOptions struct {
	Size       int64
	FS         string // ext4
	Passphrase []byte
	KDF        string
	// FromDir populates the filesystem from this directory.
	FromDir string
	// ReadOnly mkfs is not needed; kept for symmetry.
	Label string
}

// scratchDir prefers memory (tmpfs) for the plaintext staging file.
func scratchDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// Create makes a LUKS2 image holding a filesystem: the filesystem is built
// in memory (tmpfs), then encrypted sector by sector into the image, so the
// image never holds plaintext.
func Create(ctx context.Context, image string, o CreateOptions) error {
	if o.FS == "" {
		o.FS = "ext4"
	}
	if o.FS != "ext4" {
		return fmt.Errorf("filesystem %q is not supported; use ext4", o.FS)
	}
	size := o.Size / DefaultSector * DefaultSector
	if size < 1<<20 {
		return errors.New("the volume must be at least 1M")
	}
	if _, err := os.Stat(image); err == nil {
		return fmt.Errorf("%s exists; cocoon does not overwrite images", image)
	}
	tmp, err := os.CreateTemp(scratchDir(), "cocoon-volume-*")
	if err != nil {
		return err
	}
	defer func() {
		// Overwrite the staging plaintext before removing it.
		if st, err := tmp.Stat(); err == nil {
			zero := make([]byte, 1<<20)
			for off := int64(0); off < st.Size(); off += int64(len(zero)) {
				_, _ = tmp.WriteAt(zero, off)
			}
		}
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	if err := tmp.Truncate(size); err != nil {
		return err
	}
	args := []string{"-q", "-F", "-b", "4096", "-E", "root_owner=0:0"}
	if o.Label != "" {
		args = append(args, "-L", o.Label)
	}
	if o.FromDir != "" {
		args = append(args, "-d", o.FromDir)
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", append(args, tmp.Name())...).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 (e2fsprogs): %v: %s", err, out)
	}
	f, err := os.OpenFile(image, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(image)
		}
	}()
	vk, err := Format(f, FormatOptions{Passphrase: o.Passphrase, KDF: o.KDF, DataSize: size, Label: o.Label})
	if err != nil {
		return err
	}
	h, err := ReadHeader(f)
	if err != nil {
		clear(vk)
		return err
	}
	d, err := NewDevice(f, h, vk, false)
	clear(vk)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n, err := tmp.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if n == 0 {
			break
		}
		if _, err := d.WriteAt(buf[:n], off); err != nil {
			return err
		}
	}
	clear(buf)
	if err := d.Sync(); err != nil {
		return err
	}
	ok = true
	return d.Close()
}

// Info is what `cocoon volume inspect` shows: header facts, no secrets.
type Info struct {
	UUID       string        `json:"uuid"`
	Label      string        `json:"label,omitempty"`
	HeaderSize uint64        `json:"header_size"`
	SeqID      uint64        `json:"seqid"`
	Recovered  bool          `json:"recovered_from_secondary"`
	Cipher     string        `json:"cipher"`
	SectorSize int           `json:"sector_size"`
	DataOffset int64         `json:"data_offset"`
	DataSize   int64         `json:"data_size"`
	Keyslots   []KeyslotInfo `json:"keyslots"`
}

// KeyslotInfo describes a keyslot.
type KeyslotInfo struct {
	ID      string `json:"id"`
	KDF     string `json:"kdf"`
	Params  string `json:"params"`
	KeySize int    `json:"key_bits"`
}

// Inspect reads an image's header.
func Inspect(image string) (*Info, error) {
	f, err := os.Open(image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := ReadHeader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", image, err)
	}
	off, size, sector, err := h.DataSegment()
	if err != nil {
		return nil, err
	}
	if size < 0 {
		st, _ := f.Stat()
		size = st.Size() - off
	}
	in := &Info{UUID: h.UUID, Label: h.Label, HeaderSize: h.HdrSize, SeqID: h.SeqID, Recovered: h.Recovered,
		Cipher: h.Metadata.Segments["0"].Encryption, SectorSize: sector, DataOffset: off, DataSize: size}
	for id, k := range h.Metadata.Keyslots {
		p := fmt.Sprintf("time=%d memory=%dKiB cpus=%d", k.KDF.Time, k.KDF.Memory, k.KDF.CPUs)
		if k.KDF.Type == "pbkdf2" {
			p = fmt.Sprintf("hash=%s iterations=%d", k.KDF.Hash, k.KDF.Iterations)
		}
		in.Keyslots = append(in.Keyslots, KeyslotInfo{ID: id, KDF: k.KDF.Type, Params: p, KeySize: k.KeySize * 8})
	}
	return in, nil
}
