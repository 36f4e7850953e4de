package tcx

// Prune closes and forgets the links the kernel detached because their
// interface was deleted (their ifindex reads 0), and returns those
// interfaces' names. A link whose state cannot be read is kept: closing it
// would detach a program that may still be working. Attach can then link
// the program again on an interface of the same name made anew.
func (l *Links) Prune() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var gone []string
	kept := l.links[:0]
	for _, a := range l.links {
		info, err := a.link.Info()
		if err == nil {
			if tcx := info.TCX(); tcx != nil && tcx.Ifindex == 0 {
				_ = a.link.Close() // already detached: this only frees the descriptor
				gone = append(gone, a.iface)
				continue
			}
		}
		kept = append(kept, a)
	}
	clear(l.links[len(kept):])
	l.links = kept
	return gone
}
