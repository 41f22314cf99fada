// Package stats holds the benchmarks' small statistics.
package stats

import (
	"slices"
	"time"
)

// Median returns the median of d (the upper one of an even count),
// sorting d in place.
func Median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}
