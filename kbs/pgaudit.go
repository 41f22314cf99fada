package kbs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGAudit is the replicas' one audit log: each decision a line in
// kbs_audit, in the order the database committed them.
type PGAudit struct {
	p *Postgres
	// Logger reports lines the database refused (default: slog's).
	Logger *slog.Logger
	start  sync.Once
	queue  chan auditWrite
}

// auditWrite is a line to insert, or (line "") a barrier whose done
// channel is told once every line queued before it was inserted.
type auditWrite struct {
	line string
	done chan error
}

// Audit returns the shared audit log (an io.Writer of JSON lines).
func (p *Postgres) Audit() *PGAudit {
	a := &PGAudit{p: p}
	p.mu.Lock()
	p.flushers = append(p.flushers, a.flush)
	p.mu.Unlock()
	return a
}

// maxAuditLine bounds one line (they are the broker's own, small), and
// maxAuditBatch the lines one insert takes and the queue holds.
const (
	maxAuditLine  = 64 << 10
	maxAuditBatch = 1024
)

// Write queues one JSON line for the shared log and returns: the request
// that made it is not held up by the database. Lines are inserted in
// order, many per statement, within milliseconds; the replica's own audit
// file, written before, stays the record of what it decided. A full queue
// makes Write wait (nothing is dropped); a line the database refuses is
// logged with the line.
func (a *PGAudit) Write(b []byte) (int, error) {
	line := bytes.TrimSpace(b)
	if len(line) > maxAuditLine {
		return 0, fmt.Errorf("audit line of %d bytes", len(line))
	}
	if len(line) == 0 {
		return len(b), nil
	}
	if err := a.enqueue(auditWrite{line: string(line)}); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (a *PGAudit) enqueue(w auditWrite) error {
	a.start.Do(func() {
		a.queue = make(chan auditWrite, maxAuditBatch)
		go a.commit()
	})
	select {
	case a.queue <- w:
		return nil
	case <-a.p.life.Done():
		return ErrStoreClosed
	}
}

// flush returns once every line queued so far is in the database (or ctx
// ends).
func (a *PGAudit) flush(ctx context.Context) error {
	done := make(chan error, 1)
	if err := a.enqueue(auditWrite{done: done}); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-a.p.life.Done():
		return ErrStoreClosed
	}
}

// commit inserts what is queued, a batch at a time, in order, on a
// connection of its own whose commits do not wait for the write-ahead
// log's flush (synchronous_commit off): the database writes the log to
// disk within a fraction of a second, and a database crash in between
// loses those lines from the shared log, never from the replica's file.
func (a *PGAudit) commit() {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	log := a.Logger
	if log == nil {
		log = slog.Default()
	}
	for {
		var batch []auditWrite
		select {
		case w := <-a.queue:
			batch = append(batch, w)
		case <-a.p.life.Done():
			return
		}
	more:
		for len(batch) < maxAuditBatch {
			select {
			case w := <-a.queue:
				batch = append(batch, w)
			default:
				break more
			}
		}
		var lines []string
		var barriers []chan error
		for _, w := range batch {
			if w.done != nil {
				barriers = append(barriers, w.done)
			} else {
				lines = append(lines, w.line)
			}
		}
		ctx, cancel := context.WithTimeout(a.p.life, 5*time.Second)
		var err error
		if len(lines) > 0 {
			if conn == nil {
				conn, err = a.connect(ctx)
			}
			if err == nil {
				err = insertAudit(ctx, conn, lines, log)
				if conn.IsClosed() {
					conn = nil
				}
			}
			if err != nil {
				log.Error("audit lines could not be written to the shared log (the replica's file has them)", "lines", len(lines), "error", err)
			}
		}
		cancel()
		for _, d := range barriers {
			d <- err
		}
	}
}

func (a *PGAudit) connect(ctx context.Context) (*pgx.Conn, error) {
	c, err := a.p.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	conn := c.Hijack()
	if _, err := conn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// insertAudit inserts lines in one statement; when that fails, line by
// line, so that one bad line (logged) costs only itself.
func insertAudit(ctx context.Context, conn *pgx.Conn, lines []string, log *slog.Logger) error {
	_, err := conn.Exec(ctx, `INSERT INTO kbs_audit (line)
		SELECT l::jsonb FROM unnest($1::text[]) WITH ORDINALITY AS t(l, n) ORDER BY n`, lines)
	if err == nil || len(lines) == 1 || conn.IsClosed() {
		return err
	}
	for _, l := range lines {
		if _, err := conn.Exec(ctx, `INSERT INTO kbs_audit (line) VALUES ($1)`, l); err != nil {
			if conn.IsClosed() {
				return err
			}
			log.Error("an audit line was refused by the shared log", "line", l, "error", err)
		}
	}
	return nil
}

// Tail implements AuditReader: the newest n lines, oldest first (this
// replica's queued lines included).
func (a *PGAudit) Tail(ctx context.Context, n int) ([]json.RawMessage, error) {
	if err := a.p.flushAudit(ctx); err != nil {
		return nil, err
	}
	rows, err := a.p.pool.Query(ctx, `SELECT line::text FROM (SELECT id, line FROM kbs_audit ORDER BY id DESC LIMIT $1) t ORDER BY id`, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (json.RawMessage, error) {
		var s string
		err := r.Scan(&s)
		return json.RawMessage(s), err
	})
}
