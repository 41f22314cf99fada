package kbs

import (
	"context"
	"sync"
	"time"
)

// resourcesChannel is the NOTIFY channel a trigger on kbs_resources
// signals every change on (insert, update, delete: any writer, a replica
// or an operator's SQL), with the path as the payload.
const resourcesChannel = "cocoon_kbs_resources"

// resourceCache keeps the sealed values a replica released, so that a
// release costs no query. It is trusted only while the replica listens
// for changes: every change's notification drops the path's entries (the
// replica's own changes drop them at once too), and while the listener is
// down nothing is cached or served from the cache. A read that raced a
// change is not cached (the generation moved). One-shot versions are never
// cached: each of their releases goes to the database.
type resourceCache struct {
	mu        sync.Mutex
	listening bool
	gen       uint64
	m         map[cacheKey]cachedValue
	bytes     int // of the sealed values in m
}

type cacheKey struct {
	path    string
	version int // 0: the newest enabled one
}

type cachedValue struct {
	sealed  []byte
	version int
}

// The cache's bounds: entries, bytes in all, and the largest value kept
// (most resources are keys of a few dozen bytes; a large one is read from
// the database each time).
const (
	maxCachedValues = 4096
	maxCachedBytes  = 32 << 20
	maxCachedValue  = 64 << 10
)

func (c *resourceCache) get(path string, version int) (cachedValue, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.listening {
		return cachedValue{}, false
	}
	v, ok := c.m[cacheKey{path, version}]
	return v, ok
}

// generation is read before a database read whose result put may cache.
func (c *resourceCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *resourceCache) put(gen uint64, path string, version int, v cachedValue) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.listening || gen != c.gen || len(v.sealed) > maxCachedValue {
		return
	}
	if c.m == nil || len(c.m) >= maxCachedValues || c.bytes+len(v.sealed) > maxCachedBytes {
		c.m, c.bytes = map[cacheKey]cachedValue{}, 0
	}
	k := cacheKey{path, version}
	c.bytes += len(v.sealed) - len(c.m[k].sealed)
	c.m[k] = v
}

// invalidate drops a path's entries ("" for every path).
func (c *resourceCache) invalidate(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, v := range c.m {
		if path == "" || k.path == path {
			c.bytes -= len(v.sealed)
			delete(c.m, k)
		}
	}
}

func (c *resourceCache) setListening(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listening = on
	c.gen++
	c.m, c.bytes = nil, 0
}

// follow listens for resource changes while the store lives, reconnecting
// after a failure (the cache is off meanwhile).
func (s *PGStore) follow() {
	life := s.p.life
	for life.Err() == nil {
		s.listen(life)
		select {
		case <-life.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *PGStore) listen(life context.Context) {
	c, err := s.p.pool.Acquire(life)
	if err != nil {
		return
	}
	conn := c.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(life, `LISTEN `+resourcesChannel); err != nil {
		return
	}
	s.cache.setListening(true)
	defer s.cache.setListening(false)
	for {
		n, err := conn.WaitForNotification(life)
		if err != nil {
			return
		}
		s.cache.invalidate(n.Payload)
	}
}
