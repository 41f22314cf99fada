package agent

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// maxStdinWrite bounds one WriteStdin.
const maxStdinWrite = 1 << 20

// procIO is the agent's side of an interactive process (a container with
// stdin or a terminal, or a detached exec): the writer of its stdin and, on
// a terminal, the pseudo-terminal runc relays.
//
// On a terminal runc runs in the foreground with the slave of a pty the
// agent allocated as its own stdio: runc puts the process on a terminal of
// its own in the container, relays between the two, and copies the size of
// its stdio's terminal to the container's when it gets SIGWINCH. So the
// process stays runc's child (its exit status comes from runc, no reaper)
// and the window size travels by resizing the agent's pty and signalling
// runc.
type procIO struct {
	// wmu serialises writes: one write in flight per process, so a host
	// that writes faster than the process reads holds one buffer, not
	// many.
	wmu sync.Mutex

	mu      sync.Mutex
	stdin   io.WriteCloser  // nil: no stdin, or closed
	pty     console.Console // the terminal's master (terminal only)
	runcPid int             // runc's pid, told of size changes
	pidFile string          // where runc writes the process's pid
}

// runcEnds are the ends of a process's stdio that runc gets; the agent
// closes its copies once runc started.
type runcEnds []*os.File

func (e runcEnds) close() {
	for _, f := range e {
		_ = f.Close()
	}
}

// openIO prepares the stdio of a process whose output goes to lf: a
// terminal (one stream) or pipes for stdout and stderr, and a stdin the
// host writes when withStdin. It returns what runc gets, the agent's side,
// the copies' completion and runc's ends.
func openIO(lf *logFile, terminal, withStdin bool) (pipeIO, *procIO, []<-chan struct{}, runcEnds, error) {
	pio := &procIO{}
	if terminal {
		m, slavePath, err := console.NewPty()
		if err != nil {
			return pipeIO{}, nil, nil, nil, fmt.Errorf("allocate a terminal: %w", err)
		}
		// Raw from the start: what the host writes before runc took the
		// terminal over must not be echoed or edited by this one.
		if err := m.SetRaw(); err != nil {
			m.Close()
			return pipeIO{}, nil, nil, nil, fmt.Errorf("terminal: %w", err)
		}
		_ = m.Resize(console.WinSize{Width: 80, Height: 24})
		s, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			m.Close()
			return pipeIO{}, nil, nil, nil, fmt.Errorf("open the terminal: %w", err)
		}
		pio.pty = m
		if withStdin {
			pio.stdin = nopCloser{m}
		}
		// The master is read until every holder of the slave closed it
		// (runc and the process exited): EIO ends the copy, which then
		// closes the master.
		done := lf.attach(m, agentv1.LogStream_STDOUT)
		return pipeIO{stdin: s, stdout: s, stderr: s}, pio, []<-chan struct{}{done}, runcEnds{s}, nil
	}
	var ends runcEnds
	fail := func(err error) (pipeIO, *procIO, []<-chan struct{}, runcEnds, error) {
		ends.close()
		return pipeIO{}, nil, nil, nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("output pipe: %w", err))
	}
	re, we, err := os.Pipe()
	if err != nil {
		r.Close()
		w.Close()
		return fail(fmt.Errorf("output pipe: %w", err))
	}
	ends = append(ends, w, we)
	io := pipeIO{stdout: w, stderr: we}
	if withStdin {
		ir, iw, err := os.Pipe()
		if err != nil {
			r.Close()
			re.Close()
			return fail(fmt.Errorf("stdin pipe: %w", err))
		}
		ends = append(ends, ir)
		io.stdin = ir
		pio.stdin = iw
	}
	done := []<-chan struct{}{lf.attach(r, agentv1.LogStream_STDOUT), lf.attach(re, agentv1.LogStream_STDERR)}
	return io, pio, done, ends, nil
}

// nopCloser keeps Close from closing a terminal's master: closing a
// terminal's stdin hangs it up instead (see closeStdin).
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// write writes data to the process's stdin and closes it when close is
// set. One write at a time: a second while one blocks is refused.
func (p *procIO) write(what string, data []byte, close bool) error {
	if len(data) > maxStdinWrite {
		return fmt.Errorf("%s: a stdin write of %d bytes; at most %d per request: %w", what, len(data), maxStdinWrite, errInvalid)
	}
	if !p.wmu.TryLock() {
		return fmt.Errorf("%s: a write to stdin is in progress (the process is not reading); retry when it returns: %w", what, errState)
	}
	defer p.wmu.Unlock()
	p.mu.Lock()
	w := p.stdin
	p.mu.Unlock()
	if w == nil {
		if close && len(data) == 0 {
			return nil // closed already
		}
		return fmt.Errorf("%s has no open stdin (it was created without one — stdin: true in the pod spec, open_stdin for an exec — or it was closed): %w", what, errState)
	}
	if len(data) > 0 {
		if _, err := w.Write(data); err != nil {
			return fmt.Errorf("%s: write stdin: %w", what, err)
		}
	}
	if close {
		p.closeStdin()
	}
	return nil
}

// closeStdin ends the process's input: a pipe is closed (the process reads
// EOF). A terminal gets the end-of-input character (^D: a program reading
// it sees the end of its input, as when a user types it) and the process a
// hangup (SIGHUP), as when a terminal closes; the init of a container's
// PID namespace ignores the hangup unless it handles it, so the ^D is what
// ends a shell there.
func (p *procIO) closeStdin() {
	p.mu.Lock()
	w := p.stdin
	p.stdin = nil
	terminal, pidFile := p.pty != nil, p.pidFile
	p.mu.Unlock()
	if w == nil {
		return
	}
	if terminal {
		_, _ = w.Write([]byte{0x04})
	}
	_ = w.Close()
	if terminal {
		if pid := readPid(pidFile); pid > 1 {
			_ = unix.Kill(pid, unix.SIGHUP)
		}
	}
}

// resize sets the terminal's window size and tells runc, which copies it to
// the process's terminal.
func (p *procIO) resize(what string, width, height uint32) error {
	if width == 0 || height == 0 || width > 65535 || height > 65535 {
		return fmt.Errorf("%s: window size %dx%d: give columns and rows from 1 to 65535: %w", what, width, height, errInvalid)
	}
	p.mu.Lock()
	m, pid := p.pty, p.runcPid
	p.mu.Unlock()
	if m == nil {
		return fmt.Errorf("%s has no terminal: %w", what, errState)
	}
	if err := m.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)}); err != nil {
		return fmt.Errorf("%s: resize terminal: %w", what, err)
	}
	if pid > 0 {
		_ = unix.Kill(pid, unix.SIGWINCH)
	}
	return nil
}

// started records runc's pid once it runs, and tells it to copy the
// terminal's size: a resize that came before the pid was known would
// otherwise reach the process only if runc's own first copy came after
// it. (Before runc handles SIGWINCH the signal is ignored; runc then
// copies the size when it starts relaying.)
func (p *procIO) started(runcPid int) {
	p.mu.Lock()
	p.runcPid = runcPid
	terminal := p.pty != nil
	p.mu.Unlock()
	if terminal && runcPid > 1 {
		_ = unix.Kill(runcPid, unix.SIGWINCH)
	}
}

// exited drops what the process no longer needs: its stdin writer (a
// terminal's master is closed by its output copy).
func (p *procIO) exited() {
	p.mu.Lock()
	w := p.stdin
	p.stdin, p.runcPid = nil, 0
	p.mu.Unlock()
	if w != nil {
		_ = w.Close()
	}
}
