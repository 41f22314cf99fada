package dm

import (
	"encoding/binary"
	"reflect"
	"testing"
)

// entry is one struct dm_target_versions as the kernel lays it out.
func entry(name string, last bool) []byte {
	n := (16 + len(name) + 1 + 7) &^ 7
	b := make([]byte, n)
	if !last {
		binary.NativeEndian.PutUint32(b, uint32(n))
	}
	binary.NativeEndian.PutUint32(b[4:], 1)
	copy(b[16:], name)
	return b
}

func TestParseTargets(t *testing.T) {
	var b []byte
	for i, n := range []string{"crypt", "verity", "striped", "linear", "error"} {
		b = append(b, entry(n, i == 4)...)
	}
	if got, want := parseTargets(b), []string{"crypt", "verity", "striped", "linear", "error"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := parseTargets(nil); len(got) != 0 {
		t.Fatalf("empty list: %q", got)
	}
}
