package spans

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestSpans(t *testing.T) {
	now := time.Unix(100, 0)
	clock := func() time.Time { return now }
	ctx, rec := With(context.Background(), clock)
	endOuter := Start(ctx, "outer")
	endInner := Start(ctx, "inner")
	now = now.Add(3 * time.Millisecond)
	endInner()
	now = now.Add(2 * time.Millisecond)
	endOuter()
	got := rec.Spans()
	want := []Span{{"inner", 3 * time.Millisecond}, {"outer", 5 * time.Millisecond}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	// Without a recorder nothing is recorded, nothing fails.
	Start(context.Background(), "x")()
	// Bounded.
	for i := 0; i < 2*maxSpans; i++ {
		Start(ctx, "n")()
	}
	if n := len(rec.Spans()); n != maxSpans {
		t.Errorf("%d spans kept, want %d", n, maxSpans)
	}
}
