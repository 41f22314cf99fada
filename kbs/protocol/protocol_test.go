package protocol

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	for uri, want := range map[string]string{
		"kbs:///a/b/c":     "a/b/c",
		"kbs://host/a/b/c": "a/b/c",
		"a/b/c":            "a/b/c",
		"kbs:///../b/c":    "",
		"kbs:///a/b":       "",
		"kbs:///a/b/c/d":   "",
		"kbs:///a/b/c d":   "",
		"kbs:///a/./c":     "",
		"kbs:///" + strings.Repeat("x", 129) + "/b/c": "",
	} {
		r, ty, tag, err := ParseURI(uri)
		got := ""
		if err == nil {
			got = r + "/" + ty + "/" + tag
		}
		if got != want {
			t.Errorf("%q: got %q (%v), want %q", uri, got, err, want)
		}
	}
}

func FuzzResourcePath(f *testing.F) {
	f.Add("kbs:///a/b/c")
	f.Add("kbs:///../b/c")
	f.Add("kbs://host/a/b/c")
	f.Fuzz(func(t *testing.T, uri string) {
		r, ty, tag, err := ParseURI(uri)
		if err != nil {
			return
		}
		for _, p := range []string{r, ty, tag} {
			if p == "" || p == "." || p == ".." || strings.ContainsAny(p, "/\\\x00") {
				t.Fatalf("accepted part %q of %q", p, uri)
			}
		}
	})
}
