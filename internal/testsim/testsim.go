// Package testsim shares one simulated secure processor among a test
// binary's tests (making its keys takes a moment).
package testsim

import (
	"os"
	"sync"
	"testing"

	"cocoon.dev/cocoon/tee/sim"
)

var (
	once sync.Once
	auth *sim.Authority
	err  error
)

// Authority returns the test binary's simulated secure processor.
func Authority(t testing.TB) *sim.Authority {
	t.Helper()
	once.Do(func() {
		var dir string
		if dir, err = os.MkdirTemp("", "cocoon-testsim"); err == nil {
			auth, err = sim.LoadOrCreate(dir)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return auth
}
