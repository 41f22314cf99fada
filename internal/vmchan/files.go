package vmchan

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"cocoon.dev/cocoon/guestinit"
)

// MaxTree bounds what a guest accepts for one local image source.
const MaxTree = 4 << 30

// ServeFiles answers the guest's requests for local image sources (OCI
// layouts, docker archives) on l: each stream names an absolute path, which
// must be one allowed reports true for; the answer is "ok" and a tar of
// the path (regular files and directories only), or "error: ...". The
// content is not trusted by the guest: it verifies every digest.
// Files skip reports true for are left out of the tree: the blobs of
// layers the guest takes from verified disks, which it never reads.
func ServeFiles(l net.Listener, allowed, skip func(string) bool, log *slog.Logger) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			line, err := bufio.NewReader(io.LimitReader(c, 4097)).ReadString('\n')
			if err != nil {
				return
			}
			p := filepath.Clean(strings.TrimSpace(line))
			if !filepath.IsAbs(p) || !allowed(p) {
				fmt.Fprintf(c, "error: %s is not a local image source of this pod\n", p)
				return
			}
			if _, err := os.Stat(p); err != nil {
				fmt.Fprintf(c, "error: %v\n", err)
				return
			}
			io.WriteString(c, "ok\n")
			sent, skipped, err := writeTree(c, p, skip)
			if err != nil {
				log.Warn("send local image source", "path", p, "error", err)
				return
			}
			log.Info("local image source sent", "path", p, "bytes", sent, "skipped_files", skipped)
		}()
	}
}

// writeTree writes the tree at root as a tar, leaving out the files skip
// names; it says how many bytes of files it sent and how many it left out.
func writeTree(w io.Writer, root string, skip func(string) bool) (sent int64, skipped int, err error) {
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755})
		case info.Mode().IsRegular():
			if skip != nil && skip(p) {
				skipped++
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: info.Size()}); err != nil {
				return err
			}
			n, err := io.Copy(tw, f)
			sent += n
			return err
		}
		return nil // symlinks and devices are not part of an image source
	})
	if err != nil {
		return sent, skipped, err
	}
	return sent, skipped, tw.Close()
}

// FetchTree copies the host's local image source at path into the guest,
// at the same path below root, and returns where it is (nothing is copied
// when it is there already). Only regular files and directories beneath it
// are created, so the host cannot write elsewhere.
func (g *Guest) FetchTree(ctx context.Context, path, root string) (string, error) {
	dest := filepath.Join(root, filepath.Clean("/"+path))
	if _, err := os.Lstat(dest); err == nil {
		return dest, nil // fetched before
	}
	return dest, g.fetchTo(ctx, path, dest)
}

func (g *Guest) fetchTo(ctx context.Context, path, dest string) error {
	c, err := g.Dial(ctx, TagFile)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, path+"\n"); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("local image source %s: the host did not answer: %w", path, err)
	}
	if line = strings.TrimSpace(line); line != "ok" {
		return fmt.Errorf("local image source %s: host: %s", path, strings.TrimPrefix(line, "error: "))
	}
	tmp := dest + ".partial"
	_ = os.RemoveAll(tmp)
	if err := extract(br, tmp, MaxTree); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("local image source %s: %w", path, err)
	}
	return os.Rename(tmp, dest)
}

// extract unpacks a tar of regular files and directories into dest, writing
// at most budget bytes.
func extract(r io.Reader, dest string, budget int64) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(r)
	first := true
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if first {
				return errors.New("empty answer")
			}
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if !filepath.IsLocal(name) && name != "." {
			return fmt.Errorf("entry %q is outside the source", h.Name)
		}
		p := filepath.Join(dest, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if h.Size < 0 || h.Size > budget {
				return fmt.Errorf("entry %q: %d bytes is more than a local image source may hold", h.Name, h.Size)
			}
			budget -= h.Size
			if name == "." {
				p = dest // a single file (docker archive)
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.CopyN(f, tr, h.Size)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: only files and directories are accepted", h.Name)
		}
		first = false
	}
}

// DiskSerial is the virtio-blk serial number of the host disk image at
// path: both ends derive it from the path the pod names.
func DiskSerial(path string) string {
	h := sha256.Sum256([]byte(path))
	return "cv" + hex.EncodeToString(h[:9])
}

// FindDisk returns the guest's block device for the host image at path.
func FindDisk(path string) (string, error) {
	d, err := guestinit.FindSerial(DiskSerial(path), 2*time.Second)
	if err != nil {
		return "", fmt.Errorf("volume source %s: %w", path, err)
	}
	return d, nil
}
