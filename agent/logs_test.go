package agent

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// TestLogFileStreams: stdout and stderr are kept apart in the order
// written, reads resume at the offset returned, and an offset that is not
// one a read returned is refused.
func TestLogFileStreams(t *testing.T) {
	lf, err := newLogFile(filepath.Join(t.TempDir(), "c.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.close()
	ro, wo := io.Pipe()
	re, we := io.Pipe()
	od, ed := lf.attach(ro, agentv1.LogStream_STDOUT), lf.attach(re, agentv1.LogStream_STDERR)
	ctx := context.Background()
	// Each write is in the log before the next (two pipes are not
	// ordered with each other otherwise).
	write := func(w *io.PipeWriter, s string) {
		t.Helper()
		lf.mu.Lock()
		before, changed := lf.size, lf.changed
		lf.mu.Unlock()
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		for {
			lf.mu.Lock()
			size := lf.size
			lf.mu.Unlock()
			if size > before {
				return
			}
			<-changed
			lf.mu.Lock()
			changed = lf.changed
			lf.mu.Unlock()
		}
	}
	write(wo, "out1 ")
	write(wo, "out2 ")
	write(we, "err1 ")
	write(wo, "out3")
	wo.Close()
	we.Close()
	<-od
	<-ed
	chunks, next, eof, err := lf.read(ctx, 0, 1<<20, time.Second)
	if err != nil || eof {
		t.Fatalf("read: %v eof=%v", err, eof)
	}
	want := []logChunk{{agentv1.LogStream_STDOUT, []byte("out1 out2 ")}, {agentv1.LogStream_STDERR, []byte("err1 ")}, {agentv1.LogStream_STDOUT, []byte("out3")}}
	if len(chunks) != len(want) {
		t.Fatalf("chunks %v, want %v", chunks, want)
	}
	for i := range want {
		if chunks[i].stream != want[i].stream || string(chunks[i].data) != string(want[i].data) {
			t.Errorf("chunk %d = %v %q, want %v %q", i, chunks[i].stream, chunks[i].data, want[i].stream, want[i].data)
		}
	}
	if _, _, eof, err := lf.read(ctx, next, 1<<20, time.Millisecond); err != nil || !eof {
		t.Errorf("at the end after the writers closed: eof=%v err=%v", eof, err)
	}
	// Small reads return whole records and resume where they stopped.
	var got string
	for off := int64(0); ; {
		cs, n, eof, err := lf.read(ctx, off, 1, time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if eof {
			break
		}
		for _, c := range cs {
			got += string(c.data)
		}
		off = n
	}
	if got != "out1 out2 err1 out3" {
		t.Errorf("read in small pieces: %q", got)
	}
	if _, _, _, err := lf.read(ctx, 3, 1<<20, time.Millisecond); !errors.Is(err, errLogOffset) || !errors.Is(err, errInvalid) {
		t.Errorf("an offset inside a record: %v", err)
	}
	if fi, _ := os.Stat(lf.path); fi.Size() != next {
		t.Errorf("the log is %d bytes, the end offset %d", fi.Size(), next)
	}
}
