package volume

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serveImage serves the file at p over HTTP (http.ServeContent: ranges as a
// static file server does them), through wrap when given.
func serveImage(t *testing.T, p string, wrap func(http.Handler) http.Handler) (string, *atomic.Int64) {
	t.Helper()
	var ranged atomic.Int64
	h := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			ranged.Add(1)
		}
		http.ServeFile(w, r, p)
	}))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/vol.img", &ranged
}

// TestOpenURL: an image on an HTTP server opens with range requests and
// reads as the same image opened from the file; it is read-only.
func TestOpenURL(t *testing.T) {
	p, pass, _ := format(t, "pbkdf2", 3<<20)
	d, _, err := Open(p, pass, false)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, d.Size())
	for i := range want {
		want[i] = byte(i*13 + i>>12)
	}
	if _, err := d.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	d.Close()
	u, ranged := serveImage(t, p, nil)
	r, _, err := OpenURL(context.Background(), u+"?sig=secret", nil, pass)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", r.Size(), len(want))
	}
	got := make([]byte, len(want))
	for off := 0; off < len(got); off += 1 << 20 {
		if _, err := r.ReadAt(got[off:min(off+1<<20, len(got))], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the image read over HTTP differs from the file's")
	}
	// A read at the end is short, with io.EOF; one in the middle exact.
	buf := make([]byte, 10000)
	if n, err := r.ReadAt(buf, int64(len(want)-100)); n != 100 || err == nil {
		t.Errorf("read across the end: %d, %v", n, err)
	}
	if n, err := r.ReadAt(buf[:777], 12345); n != 777 || err != nil || !bytes.Equal(buf[:777], want[12345:12345+777]) {
		t.Errorf("unaligned read: %d, %v", n, err)
	}
	if _, err := r.WriteAt([]byte("x"), 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write to a URL image: %v", err)
	}
	if ranged.Load() < 4 {
		t.Errorf("only %d range requests", ranged.Load())
	}
	if _, _, err := OpenURL(context.Background(), u, nil, []byte("wrong")); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong key: %v", err)
	}
}

// TestOpenURLRefusals: servers that do not do ranges, that answer another
// range than asked, or fail, give clear errors that do not leak the URL's
// query (a signed URL's signature); nothing opens.
func TestOpenURLRefusals(t *testing.T) {
	p, pass, _ := format(t, "pbkdf2", 1<<20)
	img, _ := os.ReadFile(p)
	for name, tc := range map[string]struct {
		h    http.HandlerFunc
		want string
	}{
		"no ranges": {func(w http.ResponseWriter, r *http.Request) {
			w.Write(img)
		}, "ignored the range request"},
		"another range": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 1-1/"+strconv.Itoa(len(img)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(img[1:2])
		}, "the server sent 1-1"},
		"malformed content-range": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-0/-5")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(img[:1])
		}, "malformed Content-Range"},
		"unknown size": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-0/*")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(img[:1])
		}, "does not say the image's size"},
		"not found": {func(w http.ResponseWriter, r *http.Request) {
			http.NotFound(w, r)
		}, "404"},
		"truncated image": {func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "vol.img", time.Time{}, bytes.NewReader(img[:len(img)/2]))
		}, "truncated"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(tc.h)
			defer srv.Close()
			d, _, err := OpenURL(context.Background(), srv.URL+"/vol.img?sig=SECRET", nil, pass)
			if err == nil {
				d.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error leaks the URL's query: %q", err)
			}
		})
	}
	for _, bad := range []string{"ftp://x/y", "http://", "/path", "https//x"} {
		if _, _, err := OpenURL(context.Background(), bad, nil, pass); err == nil || !strings.Contains(err.Error(), "not an http(s) URL") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzContentRange: the parser of a server's Content-Range never panics
// and what it accepts is a well-formed range.
func FuzzContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-0/1", "bytes 0-1023/4096", "bytes 5-9/*", "bytes 9-5/10", "bytes -1-2/3",
		"bytes 0-0/0", "bytes 1-2", "items 0-1/2", "bytes 00000000000000000001-2/3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		from, to, total, err := parseContentRange(v)
		if err != nil {
			return
		}
		if from < 0 || to < from || (total != -1 && to >= total) {
			t.Fatalf("%q accepted as %d-%d/%d", v, from, to, total)
		}
	})
}
