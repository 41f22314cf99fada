package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// logFile is a container's combined stdout/stderr, appended by a copier
// goroutine and read from offsets by any number of readers. It lives in the
// agent's private state, so the host sees logs only through ReadLogs.
type logFile struct {
	path string
	mu   sync.Mutex
	size int64
	// closed is true while no writer is attached (the container exited and
	// its pipe drained).
	closed  bool
	changed chan struct{} // closed and replaced on every change
	f       *os.File
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
	return &logFile{path: path, f: f, size: st.Size(), closed: true, changed: make(chan struct{})}, nil
}

func (l *logFile) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// attach starts copying r (a pipe's read end) into the log; the copy ends
// when every writer of the pipe has closed it.
func (l *logFile) attach(r io.ReadCloser) (done <-chan struct{}) {
	l.mu.Lock()
	l.closed = false
	l.notifyLocked()
	l.mu.Unlock()
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer r.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				l.mu.Lock()
				if m, werr := l.f.Write(buf[:n]); werr == nil {
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
		l.closed = true
		l.notifyLocked()
		l.mu.Unlock()
	}()
	return ch
}

// read returns up to max bytes from offset, waiting up to wait for data when
// there is none yet. eof is true when no writer is attached and offset is at
// the end.
func (l *logFile) read(ctx context.Context, offset int64, max int, wait time.Duration) (data []byte, next int64, eof bool, err error) {
	if offset < 0 {
		return nil, 0, false, errors.New("negative log offset")
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		size, closed, changed := l.size, l.closed, l.changed
		l.mu.Unlock()
		if offset > size {
			offset = size
		}
		if offset < size {
			n := size - offset
			if n > int64(max) {
				n = int64(max)
			}
			buf := make([]byte, n)
			m, err := l.f.ReadAt(buf, offset)
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, offset, false, fmt.Errorf("read log: %w", err)
			}
			return buf[:m], offset + int64(m), false, nil
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

func (l *logFile) close() error { return l.f.Close() }
