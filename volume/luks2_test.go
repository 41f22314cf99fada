package volume

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func needCryptsetup(t *testing.T) {
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("cryptsetup is missing")
		}
		t.Skip("needs cryptsetup (cryptsetup-bin)")
	}
}

func format(t testing.TB, kdf string, size int64) (string, []byte, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pass := []byte("correct horse battery staple")
	vk, err := Format(f, FormatOptions{Passphrase: pass, KDF: kdf, DataSize: size})
	if err != nil {
		t.Fatal(err)
	}
	return p, pass, vk
}

func TestFormatUnlockReadWrite(t *testing.T) {
	for _, kdf := range []string{"pbkdf2", "argon2id"} {
		t.Run(kdf, func(t *testing.T) {
			p, pass, vk := format(t, kdf, 1<<20)
			d, h, err := Open(p, pass, false)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.key, vk) || h.Metadata.Keyslots["0"].KDF.Type != kdf {
				t.Fatal("wrong volume key or kdf")
			}
			msg := []byte("plaintext marker 0123456789 that must not reach the disk")
			if _, err := d.WriteAt(msg, 5000); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := d.ReadAt(got, 5000); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("read back %q %v", got, err)
			}
			d.Close()
			raw, _ := os.ReadFile(p)
			if bytes.Contains(raw, []byte("plaintext marker")) {
				t.Fatal("plaintext on disk")
			}
			if _, _, err := Open(p, []byte("wrong"), false); !errors.Is(err, ErrWrongKey) {
				t.Errorf("wrong key: %v", err)
			}
			ro, _, err := Open(p, pass, true)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ro.WriteAt([]byte("x"), 0); !errors.Is(err, ErrReadOnly) {
				t.Errorf("read-only write: %v", err)
			}
			ro.Close()
		})
	}
}

func TestHeaderRecoveryAndDamage(t *testing.T) {
	p, pass, _ := format(t, "pbkdf2", 1<<20)
	raw, _ := os.ReadFile(p)
	// Primary damaged: recovered from the secondary.
	b := append([]byte{}, raw...)
	b[5000] ^= 0xff
	os.WriteFile(p, b, 0o600)
	d, h, err := Open(p, pass, true)
	if err != nil || !h.Recovered {
		t.Fatalf("primary damaged: %v %v", err, h)
	}
	d.Close()
	// Both damaged.
	b[DefaultHdrSize+5000] ^= 0xff
	os.WriteFile(p, b, 0o600)
	if _, _, err := Open(p, pass, true); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("both damaged: %v", err)
	}
	// Truncated.
	os.WriteFile(p, raw[:DataOffset+100], 0o600)
	if _, _, err := Open(p, pass, true); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated: %v", err)
	}
	os.WriteFile(p, raw[:100], 0o600)
	if _, _, err := Open(p, pass, true); err == nil {
		t.Error("a 100-byte file opened")
	}
}

func TestCryptsetupReadsOurHeader(t *testing.T) {
	needCryptsetup(t)
	for _, kdf := range []string{"pbkdf2", "argon2id"} {
		p, pass, vk := format(t, kdf, 1<<20)
		kf := filepath.Join(t.TempDir(), "key")
		os.WriteFile(kf, pass, 0o600)
		if out, err := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-file", kf, p).CombinedOutput(); err != nil {
			t.Fatalf("%s: cryptsetup open --test-passphrase: %v %s", kdf, err, out)
		}
		out, err := exec.Command("cryptsetup", "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", kf, p).CombinedOutput()
		if err != nil {
			t.Fatalf("luksDump: %v %s", err, out)
		}
		if !strings.Contains(strings.ReplaceAll(string(out), " ", ""), hex.EncodeToString(vk)[:32]) {
			t.Errorf("%s: cryptsetup found another volume key:\n%s", kdf, out)
		}
	}
}

func TestWeOpenCryptsetupImages(t *testing.T) {
	needCryptsetup(t)
	p := filepath.Join(t.TempDir(), "img")
	os.WriteFile(p, nil, 0o600)
	os.Truncate(p, 20<<20)
	kf := filepath.Join(t.TempDir(), "key")
	os.WriteFile(kf, []byte("their passphrase"), 0o600)
	if out, err := exec.Command("cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--key-file", kf,
		"--pbkdf", "argon2id", "--pbkdf-memory", "65536", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2", p).CombinedOutput(); err != nil {
		t.Fatalf("luksFormat: %v %s", err, out)
	}
	f, _ := os.Open(p)
	defer f.Close()
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	vk, err := h.Unlock(f, []byte("their passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("cryptsetup", "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", kf, p).CombinedOutput()
	if !strings.Contains(strings.ReplaceAll(string(out), " ", ""), hex.EncodeToString(vk)[:32]) {
		t.Errorf("our volume key %x is not cryptsetup's:\n%s", vk, out)
	}
	if _, err := h.Unlock(f, []byte("nope")); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong key: %v", err)
	}
}

// TestSectorsAreAESXTSPlain64 compares our sector encryption with
// OpenSSL's AES-256-XTS through Node.js (OpenSSL 3's enc command has no XTS,
// and this kernel offers no AF_ALG): an independent implementation.
func TestSectorsAreAESXTSPlain64(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node is missing (it is the OpenSSL XTS reference)")
		}
		t.Skip("needs node")
	}
	p, pass, vk := format(t, "pbkdf2", 1<<20)
	d, _, err := Open(p, pass, false)
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("0123456789abcdef"), 4096/16)
	const sector = 3
	d.WriteAt(plain, sector*4096)
	d.Close()
	raw, _ := os.ReadFile(p)
	ct := raw[DataOffset+sector*4096 : DataOffset+(sector+1)*4096]
	iv := make([]byte, 16)
	binary.LittleEndian.PutUint64(iv, sector*4096/512)
	js := `const c=require('crypto').createCipheriv('aes-256-xts',Buffer.from(process.argv[1],'hex'),Buffer.from(process.argv[2],'hex'));` +
		`process.stdout.write(Buffer.concat([c.update(Buffer.from(process.argv[3],'hex')),c.final()]).toString('hex'))`
	out, err := exec.Command(node, "-e", js, hex.EncodeToString(vk), hex.EncodeToString(iv), hex.EncodeToString(plain)).Output()
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(ct) != string(out) {
		t.Fatal("our aes-xts-plain64 sector differs from OpenSSL's AES-256-XTS")
	}
}

func FuzzReadHeader(f *testing.F) {
	dir := f.TempDir()
	fh, _ := os.Create(filepath.Join(dir, "img"))
	Format(fh, FormatOptions{Passphrase: []byte("x"), KDF: "pbkdf2", DataSize: 4096})
	fh.Close()
	raw, _ := os.ReadFile(filepath.Join(dir, "img"))
	f.Add(raw[:2*DefaultHdrSize])
	f.Add([]byte("LUKS\xba\xbe\x00\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		_, _, _, _ = h.DataSegment()
		// What passes the cost check is within every bound.
		d := h.digestFor("0")
		if d == nil || h.checkCosts(d, 1<<20) != nil {
			return
		}
		if len(d.Keyslots) > MaxKeyslotsTried || d.Iterations > MaxPBKDF2Iterations {
			t.Fatalf("digest past the bounds passed: %+v", d)
		}
		for _, id := range d.Keyslots {
			if ks := h.Metadata.Keyslots[id]; ks != nil && (ks.KDF.Iterations > MaxPBKDF2Iterations || ks.KDF.Time > MaxArgon2Time || ks.KDF.Memory > 1<<20 || ks.KDF.CPUs > MaxArgon2Threads) {
				t.Fatalf("keyslot %s past the bounds passed: %+v", id, ks.KDF)
			}
		}
	})
}

func TestUnsupportedCipherRefused(t *testing.T) {
	p, pass, _ := format(t, "pbkdf2", 1<<20)
	rewriteHeader(t, p, func(h *Header) { h.Metadata.Segments["0"].Encryption = "aes-cbc-essiv:sha256" })
	if _, _, err := Open(p, pass, true); err == nil || !strings.Contains(err.Error(), `cipher "aes-cbc-essiv:sha256" is not supported`) {
		t.Fatalf("unsupported cipher: %v", err)
	}
}

// rewriteHeader changes the LUKS2 header of the image at path as mut says,
// writing a valid header (checksums and both copies) with the change.
func rewriteHeader(t *testing.T, path string, mut func(*Header)) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	mut(h)
	if err := writeHeader(f, &h.Metadata, h.UUID, h.Label, h.SeqID+1); err != nil {
		t.Fatal(err)
	}
}
