package kbs

import (
	"net/http"
	"strings"
	"testing"
)

// TestRequestID: the Idempotency-Key forms taken and refused.
func TestRequestID(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  []string
		want    string
		wantErr string
	}{
		{"absent", nil, "", ""},
		{"quoted (structured field)", []string{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`}, "8e03978e-40d5-43e8-bc93-6894a57f9324", ""},
		{"bare token", []string{"put-1:a.b~c_d"}, "put-1:a.b~c_d", ""},
		{"the longest", []string{strings.Repeat("k", 128)}, strings.Repeat("k", 128), ""},
		{"too long", []string{strings.Repeat("k", 129)}, "", "want 1 to 128"},
		{"empty quoted", []string{`""`}, "", "want 1 to 128"},
		{"a space", []string{"two words"}, "", `holds ' '`},
		{"one quote", []string{`"abc`}, "", `holds '"'`},
		{"two headers", []string{"a", "b"}, "", "more than one"},
	} {
		h := http.Header{}
		for _, v := range tc.values {
			h.Add("Idempotency-Key", v)
		}
		got, err := requestID(h)
		if got != tc.want || (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: %q %v, want %q %q", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

// FuzzRequestID: a key taken is 1 to 128 characters of the allowed set.
func FuzzRequestID(f *testing.F) {
	for _, s := range []string{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, "put-1", `""`, "a b", `"`, strings.Repeat("k", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := requestID(http.Header{"Idempotency-Key": {v}})
		if err != nil {
			return
		}
		if got == "" || len(got) > maxRequestID || strings.Trim(got, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:") != "" {
			t.Fatalf("took %q as %q", v, got)
		}
	})
}
