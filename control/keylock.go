package control

import (
	"context"
	"sync"
)

// keyLock is a set of mutexes by key, made on demand and dropped when
// nobody holds or waits for them: serve.spawn locks the hops it may reuse
// or build, so spawns of different paths run at once and spawns sharing a
// hop build it once. Its zero value is ready.
type keyLock struct {
	mu sync.Mutex
	m  map[any]*keyEntry
}

type keyEntry struct {
	ch    chan struct{} // holds a token while the key is locked
	users int           // holders and waiters
}

// lock locks key, waiting until it is free or ctx ends (then it returns
// ctx's error and holds nothing). unlock must be called once.
func (k *keyLock) lock(ctx context.Context, key any) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[any]*keyEntry)
	}
	e := k.m[key]
	if e == nil {
		e = &keyEntry{ch: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.users++
	k.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; k.done(key, e) }, nil
	case <-ctx.Done():
		k.done(key, e)
		return nil, ctx.Err()
	}
}

func (k *keyLock) done(key any, e *keyEntry) {
	k.mu.Lock()
	e.users--
	if e.users == 0 {
		delete(k.m, key)
	}
	k.mu.Unlock()
}
