package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// httpImage is a LUKS2 image read over HTTP(S) with range requests, one
// request per read. It is read-only. The server is as untrusted as the
// host's disk: what it returns is checked for shape (the range asked for)
// and, being ciphertext, decrypts to garbage if altered — XTS gives no
// integrity, on a URL as on a file.
type httpImage struct {
	url  string
	hc   *http.Client
	size int64
}

// httpReadTimeout bounds one range request (a read of at most a few MiB).
const httpReadTimeout = 60 * time.Second

// IsURL reports whether an encrypted volume's source is an http(s) URL
// (read with range requests) rather than a path.
func IsURL(source string) bool {
	return strings.HasPrefix(source, "https://") || strings.HasPrefix(source, "http://")
}

// OpenURL opens the LUKS2 image at an http(s) URL, read with range
// requests, with pass; the device is read-only. hc carries the requests
// (nil: http.DefaultClient).
func OpenURL(ctx context.Context, rawURL string, hc *http.Client, pass []byte) (*Device, *Header, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, fmt.Errorf("%q is not an http(s) URL", rawURL)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	img := &httpImage{url: rawURL, hc: hc}
	d, h, err := img.open(ctx, pass)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", redactURL(u), err)
	}
	return d, h, nil
}

// open sizes the image, reads its header and unlocks it.
func (h *httpImage) open(ctx context.Context, pass []byte) (*Device, *Header, error) {
	// A one-byte range gives the size and shows that ranges work.
	size, err := h.probe(ctx)
	if err != nil {
		return nil, nil, err
	}
	h.size = size
	hdr, err := ReadHeader(h)
	if err != nil {
		return nil, nil, err
	}
	vk, err := hdr.Unlock(h, pass)
	if err != nil {
		return nil, nil, err
	}
	defer clear(vk)
	d, err := newDevice(h, size, hdr, vk, true)
	if err != nil {
		return nil, nil, err
	}
	return d, hdr, nil
}

// redactURL drops credentials and the query (a signed URL's signature)
// from a URL for error messages.
func redactURL(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.Fragment = nil, "", ""
	return c.String()
}

func (h *httpImage) probe(ctx context.Context) (int64, error) {
	resp, err := h.get(ctx, 0, 0)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _, total, err := checkRange(resp, 0, 0)
	if err != nil {
		return 0, err
	}
	if total < 0 {
		return 0, errors.New("the server does not say the image's size (Content-Range */*): serve it as a static file")
	}
	return total, nil
}

func (h *httpImage) get(ctx context.Context, first, last int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(first, 10)+"-"+strconv.FormatInt(last, 10))
	// The bytes as stored: a transparently decompressed body would not
	// match the range.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := h.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, ue.Err // without the URL, which may carry a signature
		}
		return nil, err
	}
	return resp, nil
}

// checkRange checks that resp is a 206 for bytes first..last (or a prefix
// of them, at the end of the image) and returns what it holds and the
// image's size (-1 when the server does not say).
func checkRange(resp *http.Response, first, last int64) (from, to, total int64, err error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		return 0, 0, 0, errors.New("the server ignored the range request (200 OK with the whole image): serve the image from a server that supports HTTP ranges (any static file server does)")
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, 0, 0, fmt.Errorf("bytes %d-%d are past the end of the image (416)", first, last)
	default:
		return 0, 0, 0, fmt.Errorf("range request for bytes %d-%d: %s", first, last, resp.Status)
	}
	from, to, total, err = parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return 0, 0, 0, err
	}
	if from != first || to > last {
		return 0, 0, 0, fmt.Errorf("asked for bytes %d-%d, the server sent %d-%d", first, last, from, to)
	}
	return from, to, total, nil
}

// parseContentRange parses "bytes FROM-TO/TOTAL" (TOTAL may be "*": -1).
func parseContentRange(v string) (from, to, total int64, err error) {
	bad := fmt.Errorf("malformed Content-Range %.80q: want bytes FROM-TO/SIZE", v)
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	num := func(s string) (int64, bool) {
		if s == "" || len(s) > 18 || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	if from, ok = num(a); !ok {
		return 0, 0, 0, bad
	}
	if to, ok = num(b); !ok || to < from {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, ok = num(tot); !ok || to >= total {
			return 0, 0, 0, bad
		}
	}
	return from, to, total, nil
}

// ReadAt reads p at off with one range request; short (io.EOF) at the end
// of the image.
func (h *httpImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= h.size {
		return 0, io.EOF
	}
	last := min(off+int64(len(p)), h.size) - 1
	ctx, cancel := context.WithTimeout(context.Background(), httpReadTimeout)
	defer cancel()
	resp, err := h.get(ctx, off, last)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	from, to, total, err := checkRange(resp, off, last)
	if err != nil {
		return 0, err
	}
	if to != last {
		return 0, fmt.Errorf("asked for bytes %d-%d, the server sent %d-%d", off, last, from, to)
	}
	if total >= 0 && total != h.size {
		return 0, fmt.Errorf("the image changed size on the server (%d bytes, was %d)", total, h.size)
	}
	n, err := io.ReadFull(resp.Body, p[:to-from+1])
	if err != nil {
		return n, fmt.Errorf("reading bytes %d-%d: %w", from, to, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt refuses: an image on a URL is read-only.
func (h *httpImage) WriteAt([]byte, int64) (int, error) { return 0, ErrReadOnly }

// Sync has nothing to flush.
func (h *httpImage) Sync() error { return nil }

// Close drops idle connections.
func (h *httpImage) Close() error {
	h.hc.CloseIdleConnections()
	return nil
}
