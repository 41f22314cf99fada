// Package spans records the steps one request took, carried in its
// context: the agent answers them with the request (`cocoon run --trace`).
// Without a recorder in the context, recording does nothing.
package spans

import (
	"context"
	"sync"
	"time"
)

// Span is a named step and how long it took.
type Span struct {
	Name     string
	Duration time.Duration
}

// Recorder collects a request's spans, in the order they ended.
type Recorder struct {
	mu   sync.Mutex
	list []Span
	now  func() time.Time
}

type key struct{}

// maxSpans bounds what one request records.
const maxSpans = 64

// With returns a context that records into a new recorder, and the
// recorder; now is the clock (time.Now when nil).
func With(ctx context.Context, now func() time.Time) (context.Context, *Recorder) {
	if now == nil {
		now = time.Now
	}
	r := &Recorder{now: now}
	return context.WithValue(ctx, key{}, r), r
}

// Start begins a step; the function it returns ends it.
func Start(ctx context.Context, name string) (end func()) {
	r, _ := ctx.Value(key{}).(*Recorder)
	if r == nil {
		return func() {}
	}
	t0 := r.now()
	return func() { r.add(Span{Name: name, Duration: r.now().Sub(t0)}) }
}

// Add records a step whose name is known only at its end.
func Add(ctx context.Context, name string, d time.Duration) {
	if r, _ := ctx.Value(key{}).(*Recorder); r != nil {
		r.add(Span{Name: name, Duration: d})
	}
}

func (r *Recorder) add(s Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.list) < maxSpans {
		r.list = append(r.list, s)
	}
}

// Spans returns what was recorded.
func (r *Recorder) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.list...)
}
