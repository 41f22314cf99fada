package sealed

import (
	"encoding/base64"
	"strings"
	"testing"
)

// coco is a sealed secret as Confidential Containers' documentation writes
// it (guest-components, confidential-data-hub/docs/SEALED_SECRET.md): a
// fake header and signature around a vault payload naming
// kbs:///default/sealed-secret/test, with the payload's whitespace.
const coco = "sealed.fakejwsheader.ewogICAgInZlcnNpb24iOiAiMC4xLjAiLAogICAgInR5cGUiOiAidmF1bHQiLAogICAgIm5hbWUiOiAia2JzOi8vL2RlZmF1bHQvc2VhbGVkLXNlY3JldC90ZXN0IiwKICAgICJwcm92aWRlciI6ICJrYnMiLAogICAgInByb3ZpZGVyX3NldHRpbmdzIjoge30sCiAgICAiYW5ub3RhdGlvbnMiOiB7fQp9Cg.fakesignature"

func payload(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParse(t *testing.T) {
	own, err := Seal("kbs:///app/key/db")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{"coco's example", coco, "default/sealed-secret/test", ""},
		{"cocoon kbs seal", own, "app/key/db", ""},
		{"not sealed", "plain", "", `starts with "sealed."`},
		{"too few parts", "sealed.a.b", "", "has 2 parts"},
		{"too many parts", "sealed.a.b.c.d", "", "has 4 parts"},
		{"not base64", "sealed.h.!!!.s", "", "not base64url"},
		{"not JSON", "sealed.h." + payload("{") + ".s", "", "payload"},
		{"unknown field", "sealed.h." + payload(`{"version":"0.1.0","type":"vault","provider":"kbs","name":"kbs:///a/b/c","extra":1}`) + ".s", "", "unknown field"},
		{"trailing data", "sealed.h." + payload(`{"version":"0.1.0","type":"vault","provider":"kbs","name":"kbs:///a/b/c"} {}`) + ".s", "", "after its JSON"},
		{"version", "sealed.h." + payload(`{"version":"0.2.0","type":"vault","provider":"kbs","name":"kbs:///a/b/c"}`) + ".s", "", "version"},
		{"envelope", "sealed.h." + payload(`{"version":"0.1.0","type":"envelope","provider":"kbs","name":"kbs:///a/b/c"}`) + ".s", "", "envelope sealed secrets"},
		{"provider", "sealed.h." + payload(`{"version":"0.1.0","type":"vault","provider":"aliyun","name":"kbs:///a/b/c"}`) + ".s", "", "provider"},
		{"bad name", "sealed.h." + payload(`{"version":"0.1.0","type":"vault","provider":"kbs","name":"kbs:///a/../c"}`) + ".s", "", "name"},
		{"huge", Prefix + strings.Repeat("a", MaxLen), "", "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r, ty, tag := s.Resource()
			if got := r + "/" + ty + "/" + tag; got != tc.want {
				t.Fatalf("resource %s, want %s", got, tc.want)
			}
		})
	}
	if !strings.HasSuffix(own, ".") || strings.Count(own, ".") != 3 {
		t.Errorf("Seal wrote %q: want the four-part form with an empty signature", own)
	}
	if _, err := Seal("kbs:///../x/y"); err == nil {
		t.Error("Seal took a bad resource")
	}
}

// FuzzParse: no input panics, and whatever parses names a valid resource.
func FuzzParse(f *testing.F) {
	f.Add(coco)
	own, _ := Seal("kbs:///app/key/db")
	f.Add(own)
	f.Add("sealed.h." + payload(`{"version":"0.1.0","type":"envelope"}`) + ".s")
	f.Add("sealed....")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		if r, ty, tag := s.Resource(); r == "" || ty == "" || tag == "" {
			t.Fatalf("parsed %q to an empty resource", in)
		}
	})
}
