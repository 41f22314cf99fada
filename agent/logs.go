package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// logFile is a container's output: records of stdout and stderr in the
// order written, appended by copier goroutines and read from offsets by
// any number of readers. It lives in the agent's private state, so the host
// sees logs only through ReadLogs.
//
// A record is a 5-byte header — the stream (0 stdout, 1 stderr) and the
// data's length (uint32, big endian) — and the data. Offsets are record
// boundaries; readers treat them as opaque.
type logFile struct {
	path string
	mu   sync.Mutex
	size int64
	// writers counts the attached streams; the log is closed while none
	// is (the container exited and its pipes drained).
	writers int
	changed chan struct{} // closed and replaced on every change
	f       *os.File
}

const (
	logHeader = 5
	// logRecordMax is the largest record (one read of a pipe).
	logRecordMax = 32 << 10
)

// logChunk is a run of one stream's output.
type logChunk struct {
	stream agentv1.LogStream
	data   []byte
}

func newLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat log: %w", err)
	}
	return &logFile{path: path, f: f, size: st.Size(), changed: make(chan struct{})}, nil
}

func (l *logFile) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// attach starts copying r (a pipe's read end) into the log as stream; the
// copy ends when every writer of the pipe has closed it.
func (l *logFile) attach(r io.ReadCloser, stream agentv1.LogStream) (done <-chan struct{}) {
	l.mu.Lock()
	l.writers++
	l.notifyLocked()
	l.mu.Unlock()
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer r.Close()
		buf := make([]byte, logHeader+logRecordMax)
		for {
			n, err := r.Read(buf[logHeader:])
			if n > 0 {
				buf[0] = byte(stream)
				binary.BigEndian.PutUint32(buf[1:logHeader], uint32(n))
				l.mu.Lock()
				if m, werr := l.f.Write(buf[:logHeader+n]); werr == nil {
					l.size += int64(m)
				}
				l.notifyLocked()
				l.mu.Unlock()
			}
			if err != nil {
				break
			}
		}
		l.mu.Lock()
		l.writers--
		l.notifyLocked()
		l.mu.Unlock()
	}()
	return ch
}

// errLogOffset is a read from an offset that is not a record boundary.
var errLogOffset = errors.New("log offset is not one a read returned")

// read returns the records from offset, up to about max bytes of data,
// waiting up to wait for data when there is none yet. eof is true when no
// writer is attached and offset is at the end.
func (l *logFile) read(ctx context.Context, offset int64, max int, wait time.Duration) (chunks []logChunk, next int64, eof bool, err error) {
	if offset < 0 {
		return nil, 0, false, errors.New("negative log offset")
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		size, closed, changed := l.size, l.writers == 0, l.changed
		l.mu.Unlock()
		if offset > size {
			offset = size
		}
		if offset < size {
			return l.readRecords(offset, size, max)
		}
		if closed {
			return nil, offset, true, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, offset, false, nil
		case <-ctx.Done():
			return nil, offset, false, ctx.Err()
		}
	}
}

// readRecords reads whole records from offset (below size) until about max
// bytes of data.
func (l *logFile) readRecords(offset, size int64, max int) ([]logChunk, int64, bool, error) {
	var chunks []logChunk
	total := 0
	var hdr [logHeader]byte
	for offset < size && total < max {
		if _, err := l.f.ReadAt(hdr[:], offset); err != nil {
			return nil, offset, false, fmt.Errorf("read log: %w", err)
		}
		n := int64(binary.BigEndian.Uint32(hdr[1:]))
		stream := agentv1.LogStream(hdr[0])
		if (stream != agentv1.LogStream_STDOUT && stream != agentv1.LogStream_STDERR) || n == 0 || n > logRecordMax || offset+logHeader+n > size {
			return nil, offset, false, fmt.Errorf("%w: %d: %w", errLogOffset, offset, errInvalid)
		}
		data := make([]byte, n)
		if _, err := l.f.ReadAt(data, offset+logHeader); err != nil {
			return nil, offset, false, fmt.Errorf("read log: %w", err)
		}
		if k := len(chunks); k > 0 && chunks[k-1].stream == stream {
			chunks[k-1].data = append(chunks[k-1].data, data...)
		} else {
			chunks = append(chunks, logChunk{stream: stream, data: data})
		}
		total += int(n)
		offset += logHeader + n
	}
	return chunks, offset, false, nil
}

func (l *logFile) close() error { return l.f.Close() }
