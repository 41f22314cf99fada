package eventlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

// TestEntryLayout: the bytes of one entry, spelled out field by field as
// the TCG2 EV_EVENT_TAG form guest-components writes (attestation-agent
// src/eventlog/tcg2.rs) lays them out.
func TestEntryLayout(t *testing.T) {
	e := Event{Domain: "github.com/x", Operation: "load", Content: "model v1"}
	entry, digest, err := e.Entry(17)
	if err != nil {
		t.Fatal(err)
	}
	text := "github.com/x load model v1"
	data := "4c454141" + hex.EncodeToString([]byte{byte(len(text)), 0, 0, 0}) + hex.EncodeToString([]byte(text))
	raw, _ := hex.DecodeString(data)
	sum := sha256.Sum256(raw)
	want := "11000000" + "06000000" + "01000000" + "0b00" + hex.EncodeToString(sum[:]) +
		hex.EncodeToString([]byte{byte(len(raw)), 0, 0, 0}) + data
	if got := hex.EncodeToString(entry); got != want {
		t.Fatalf("entry\n got %s\nwant %s", got, want)
	}
	if digest != sum {
		t.Errorf("digest %x, want SHA-256 of the event data %x", digest, sum)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		e    Event
		want string // "" when valid
	}{
		{"plain", Event{"d", "op", "some content with spaces"}, ""},
		{"empty content", Event{"d", "op", ""}, ""},
		{"empty domain", Event{"", "op", "c"}, "domain is empty"},
		{"empty operation", Event{"d", "", "c"}, "operation is empty"},
		{"space in domain", Event{"a b", "op", "c"}, "one word"},
		{"tab in operation", Event{"d", "o\tp", "c"}, "one word"},
		{"newline in content", Event{"d", "op", "a\nb"}, "line break"},
		{"carriage return in content", Event{"d", "op", "a\rb"}, "line break"},
		{"long domain", Event{strings.Repeat("d", MaxName+1), "op", "c"}, "at most 256"},
		{"long content", Event{"d", "op", strings.Repeat("c", MaxContent+1)}, "at most 4096"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
			if _, _, err := tc.e.Entry(17); err == nil {
				t.Error("Entry encoded an invalid event")
			}
		})
	}
}

func buildLog(t testing.TB, evs ...Event) []byte {
	var log []byte
	for _, e := range evs {
		b, _, err := e.Entry(17)
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, b...)
	}
	return log
}

// TestParseReplay: a log parses back to its events, and replays to the
// register a TPM extended with the same digests shows.
func TestParseReplay(t *testing.T) {
	evs := []Event{{"a", "x", "1"}, {"b", "y", ""}, {"c", "z", "three words here"}}
	recs, err := Parse(buildLog(t, evs...))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(evs) {
		t.Fatalf("%d records", len(recs))
	}
	pcr := [32]byte{0xff}
	start := pcr
	for i, r := range recs {
		if r.Event != evs[i] || r.Register != 17 {
			t.Errorf("record %d: %+v", i, r)
		}
		_, d, _ := evs[i].Entry(17)
		pcr = sha256.Sum256(append(pcr[:], d[:]...))
	}
	if Replay(recs, 17, start) != pcr {
		t.Error("replay differs from extending the digests in order")
	}
	if Replay(recs, 16, start) != start {
		t.Error("another register's records changed the replay")
	}
	if recs, err := Parse(nil); err != nil || len(recs) != 0 {
		t.Errorf("an empty log: %v %v", recs, err)
	}
}

func TestParseRefuses(t *testing.T) {
	good := buildLog(t, Event{"a", "x", "1"})
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := []struct {
		name string
		log  []byte
		want string
	}{
		{"truncated header", good[:10], "header"},
		{"truncated data", good[:len(good)-1], "remain"},
		{"another event type", mod(func(b []byte) []byte { b[4] = 1; return b }), "EV_EVENT_TAG"},
		{"two digests", mod(func(b []byte) []byte { b[8] = 2; return b }), "digests"},
		{"SHA-384", mod(func(b []byte) []byte { b[12] = 0x0c; return b }), "algorithm"},
		{"digest of other data", mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), "not that of the event data"},
		{"huge size", mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[headerLen-4:], 0xffffffff); return b }), "at most"},
		{"not AAEL", rehash(t, mod(func(b []byte) []byte { b[headerLen] = 'X'; return b })), "AAEL"},
		{"no spaces", rehash(t, func() []byte {
			b := mod(func(b []byte) []byte { return b })
			copy(b[headerLen+8:], "axx1")
			return b
		}()), "domain operation content"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.log); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
}

// rehash makes a single entry's digest match its (altered) data, so that
// the check after the digest is the one that refuses.
func rehash(t *testing.T, entry []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(entry[headerLen:])
	copy(entry[14:], sum[:])
	return entry
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{})
	f.Add(buildLog(f, Event{"a", "x", "1"}, Event{"domain", "op", "content with spaces"}))
	f.Fuzz(func(t *testing.T, log []byte) {
		recs, err := Parse(log)
		if err != nil {
			return
		}
		// What parses re-encodes to the same bytes.
		var again []byte
		for _, r := range recs {
			b, d, err := r.Event.Entry(r.Register)
			if err != nil || d != r.Digest {
				t.Fatalf("a parsed record does not re-encode: %v", err)
			}
			again = append(again, b...)
		}
		if !bytes.Equal(again, log) {
			t.Fatal("re-encoding differs")
		}
	})
}
