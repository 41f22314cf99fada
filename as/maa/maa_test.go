package maa

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	rd := []byte(`{"keys":[]}`)
	req, err := NewRequest([]byte("report"), [][]byte{[]byte("vcek"), []byte("ask")}, rd)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(req)
	var back Request
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	report, certs, got, err := back.Decode()
	if err != nil || string(report) != "report" || len(certs) != 2 || string(certs[1]) != "ask" || !bytes.Equal(got, rd) {
		t.Fatalf("%q %q %q %v", report, certs, got, err)
	}
	if _, err := NewRequest([]byte("r"), nil, []byte("not json")); err == nil {
		t.Error("binary runtime data accepted as JSON")
	}
}

func FuzzDecode(f *testing.F) {
	req, _ := NewRequest([]byte("report"), [][]byte{[]byte("vcek")}, []byte(`{"a":1}`))
	b, _ := json.Marshal(req)
	f.Add(b)
	f.Add([]byte(`{"report":"e30","runtimeData":{"data":"","dataType":"Binary"}}`))
	f.Add([]byte(`{"report":"!!","runtimeData":{"data":"e30","dataType":"XML"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if json.Unmarshal(b, &r) != nil {
			return
		}
		report, _, rd, err := r.Decode()
		if err == nil && (len(report) == 0 || (r.RuntimeData.DataType == "JSON" && !json.Valid(rd))) {
			t.Fatalf("accepted %q", b)
		}
	})
}
