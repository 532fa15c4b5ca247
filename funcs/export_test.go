package funcs

// LinksWithCalls is how many links have calls admitted right now: the
// entries of the per-link quota map.
func (d *Dispatcher) LinksWithCalls() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.links)
}
