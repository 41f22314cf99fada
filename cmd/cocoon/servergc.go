package main

import "runtime/debug"

// tuneServerGC sets the collector for the attestation service and the key
// broker: their requests allocate (JSON, JOSE, TLS) on a small live heap,
// so fewer collections (GOGC=1000), bounded by a 1 GiB soft limit, leave
// the CPU to the crypto.
func tuneServerGC() {
	debug.SetGCPercent(1000)
	debug.SetMemoryLimit(1 << 30)
}
