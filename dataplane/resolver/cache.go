package resolver

import (
	"container/list"
	"log/slog"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cacheKey is what makes two questions the same answer.
type cacheKey struct {
	name   string // lowercase, fully qualified
	qtype  uint16
	qclass uint16
	do, cd bool
}

// cacheEntry is one stored answer: msg is never modified after put.
type cacheEntry struct {
	key     cacheKey
	msg     *dns.Msg
	packed  *packedAnswer // nil when the fast path cannot serve msg
	stored  time.Time
	expires time.Time
	size    int
}

// cache is an LRU of answers bounded by entry count and total wire size.
type cache struct {
	mu       sync.Mutex
	maxLen   int
	maxBytes int
	bytes    int
	ll       *list.List // front: most recently used
	m        map[cacheKey]*list.Element
	// kernel, when not nil, mirrors the answers it can serve (see
	// kernelServes); it is called after mu is released.
	kernel KernelCache
	log    *slog.Logger
}

// kernelServes reports whether an entry goes to the kernel cache: a
// pre-packed answer to a plain IN question without DO or CD, and not a
// sinkhole (a blocked name must reach OnQuery, which reports it).
func kernelServes(k cacheKey, packed *packedAnswer) bool {
	return packed != nil && !packed.blocked && k.qclass == dns.ClassINET && !k.do && !k.cd
}

// kernelOps are the kernel cache calls a cache change needs, made once
// the cache's lock is released.
type kernelOps struct {
	put     *cacheEntry
	deletes []cacheKey
}

// forget notes that e left the cache.
func (o *kernelOps) forget(e *cacheEntry) {
	if kernelServes(e.key, e.packed) {
		o.deletes = append(o.deletes, e.key)
	}
}

// apply makes the calls on kc (which may be nil).
func (o *kernelOps) apply(kc KernelCache, log *slog.Logger) {
	if kc == nil {
		return
	}
	for _, k := range o.deletes {
		if o.put != nil && k == o.put.key {
			continue // replaced: the put below overwrites it
		}
		if err := kc.Delete(k.name, k.qtype); err != nil {
			log.Debug("delete kernel cache entry", "name", k.name, "err", err)
		}
	}
	if e := o.put; e != nil {
		if err := kc.Put(e.packed.wire, e.expires.Sub(e.stored)); err != nil {
			log.Debug("put kernel cache entry", "name", e.key.name, "err", err)
		}
	}
}

func newCache(maxLen, maxBytes int) *cache {
	return &cache{maxLen: maxLen, maxBytes: maxBytes, ll: list.New(), m: map[cacheKey]*list.Element{}, log: slog.Default()}
}

// get returns the answer for k and how long ago it was stored, or false
// when there is none or it has expired at now.
func (c *cache) get(k cacheKey, now time.Time) (*dns.Msg, time.Duration, bool) {
	c.mu.Lock()
	el, ok := c.m[k]
	if !ok {
		c.mu.Unlock()
		return nil, 0, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		c.mu.Unlock()
		var ops kernelOps
		ops.forget(e)
		ops.apply(c.kernel, c.log)
		return nil, 0, false
	}
	c.ll.MoveToFront(el)
	c.mu.Unlock()
	elapsed := now.Sub(e.stored)
	if elapsed < 0 { // the clock went back: treat as fresh
		elapsed = 0
	}
	return e.msg, elapsed, true
}

// getPacked is get for the fast path: the pre-packed answer for k, false
// also when k's answer has none.
func (c *cache) getPacked(k cacheKey, now time.Time) (*packedAnswer, time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok {
		return nil, 0, false
	}
	e := el.Value.(*cacheEntry)
	if e.packed == nil || !now.Before(e.expires) {
		return nil, 0, false // get removes an expired entry
	}
	c.ll.MoveToFront(el)
	return e.packed, max(now.Sub(e.stored), 0), true
}

// put stores msg for ttl from now, evicting the least recently used
// answers beyond the bounds. An answer larger than the byte bound is not
// stored.
func (c *cache) put(k cacheKey, msg *dns.Msg, ttl time.Duration, now time.Time) {
	c.putPacked(k, msg, nil, ttl, now)
}

// putPacked is put with msg's pre-packed form (which may be nil); both
// count towards the byte bound.
func (c *cache) putPacked(k cacheKey, msg *dns.Msg, packed *packedAnswer, ttl time.Duration, now time.Time) {
	size := msg.Len()
	if packed != nil {
		size += len(packed.wire)
	}
	if ttl <= 0 || size > c.maxBytes || c.maxLen <= 0 {
		return
	}
	var ops kernelOps
	defer ops.apply(c.kernel, c.log) // after the deferred Unlock
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		ops.forget(c.remove(el))
	}
	e := &cacheEntry{key: k, msg: msg, packed: packed, stored: now, expires: now.Add(ttl), size: size}
	c.m[k] = c.ll.PushFront(e)
	c.bytes += size
	if kernelServes(k, packed) {
		ops.put = e
	}
	for c.ll.Len() > c.maxLen || c.bytes > c.maxBytes {
		gone := c.remove(c.ll.Back())
		if gone == e {
			ops.put = nil
		}
		ops.forget(gone)
	}
}

func (c *cache) remove(el *list.Element) *cacheEntry {
	e := c.ll.Remove(el).(*cacheEntry)
	delete(c.m, e.key)
	c.bytes -= e.size
	return e
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// prepareForCache clamps the TTLs of m (an upstream answer without OPT) to
// [minTTL, maxTTL], sets a negative answer's SOA TTL to its negative TTL
// (RFC 2308: min of SOA TTL and SOA MINIMUM), and returns how long m may be
// cached: zero when it must not be (errors, truncation, no SOA on a
// negative answer, TTL 0).
func prepareForCache(m *dns.Msg, minTTL, maxTTL time.Duration) time.Duration {
	if m.Truncated || (m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError) {
		return 0
	}
	minS, maxS := durSeconds(minTTL), durSeconds(maxTTL)
	clamp := func(t uint32) uint32 { return max(minS, min(t, maxS)) }
	negative := m.Rcode == dns.RcodeNameError || len(m.Answer) == 0
	var soa *dns.SOA
	for _, rr := range m.Ns {
		if s, ok := rr.(*dns.SOA); ok {
			soa = s
			break
		}
	}
	if negative && soa == nil {
		return 0
	}
	if soa != nil && negative {
		soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	}
	ttl := uint32(0)
	first := true
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			h.Ttl = clamp(h.Ttl)
			if first || h.Ttl < ttl {
				ttl, first = h.Ttl, false
			}
		}
	}
	if first {
		return 0
	}
	return time.Duration(ttl) * time.Second
}

func durSeconds(d time.Duration) uint32 {
	s := d / time.Second
	if s > 1<<31-1 { // RFC 2181: TTLs are 31 bits
		s = 1<<31 - 1
	}
	return uint32(s)
}
