package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Event filter limits.
const (
	DefaultEventLimit = 100
	MaxEventLimit     = 10000
)

// maxAppendBatch bounds how many events one transaction commits, so that a
// flood cannot make one transaction (and its callers' wait) grow without
// bound.
const maxAppendBatch = 1024

// appendReq is one AppendEvent call waiting for a group commit.
type appendReq struct {
	ev   model.Event
	enc  []byte            // encodeEvent(ev)
	done chan appendResult // buffered 1; at most one message pending at a time
}

// appendResult is either the outcome of the commit or, with lead set, the
// request to commit the next group.
type appendResult struct {
	ev   model.Event
	err  error
	lead bool
}

// AppendEvent stores e with a new ID (monotonic, from the events bucket's
// sequence; e.ID is ignored) and a Time of now when zero, drops the oldest
// events beyond the bound, and returns the stored event once it is durable.
//
// Concurrent calls are committed together (group commit): while one
// transaction is being fsynced the next calls queue up, and the first of
// them commits the whole queue in one transaction. A lone caller pays one
// fsync and no added delay; a flood pays about one fsync per batch.
func (s *Store) AppendEvent(e model.Event) (model.Event, error) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	enc, err := encodeEvent(e)
	if err != nil {
		return model.Event{}, fmt.Errorf("append event: %w", err)
	}
	r := &appendReq{ev: e, enc: enc, done: make(chan appendResult, 1)}

	s.mu.Lock()
	s.pending = append(s.pending, r)
	lead := !s.committing
	s.committing = true
	s.mu.Unlock()

	if !lead {
		res := <-r.done
		if !res.lead {
			return res.ev, res.err
		}
	}
	s.commitPending()
	res := <-r.done
	return res.ev, res.err
}

// commitPending commits up to maxAppendBatch queued events (the caller's own
// request is the first), answers each caller, and hands the lead to the next
// queued caller if any.
func (s *Store) commitPending() {
	s.mu.Lock()
	n := min(len(s.pending), maxAppendBatch)
	batch := s.pending[:n:n]
	s.pending = s.pending[n:]
	s.mu.Unlock()

	out := make([]model.Event, len(batch))
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for i, r := range batch {
			id, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(u64(id), r.enc); err != nil {
				return err
			}
			out[i] = r.ev
			out[i].ID = id
		}
		count, err := eventCount(tx)
		if err != nil {
			return err
		}
		_, err = s.trimEvents(tx, count+len(batch))
		return err
	})
	for i, r := range batch {
		if err != nil {
			r.done <- appendResult{err: fmt.Errorf("append event: %w", err)}
		} else {
			r.done <- appendResult{ev: out[i]}
		}
	}

	s.mu.Lock()
	if len(s.pending) == 0 {
		s.committing = false
		s.mu.Unlock()
		return
	}
	next := s.pending[0]
	s.mu.Unlock()
	next.done <- appendResult{lead: true}
}

// trimEvents deletes the oldest events until at most maxEvents remain and
// stores the resulting count, which it returns. count is the number of
// events in the bucket now.
func (s *Store) trimEvents(tx *bolt.Tx, count int) (int, error) {
	b := tx.Bucket(bucketEvents)
	c := b.Cursor()
	for count > s.maxEvents {
		k, _ := c.First()
		if k == nil {
			return 0, errors.New("trim events: event count above the events stored")
		}
		if err := c.Delete(); err != nil {
			return 0, fmt.Errorf("trim events: %w", err)
		}
		count--
	}
	if err := tx.Bucket(bucketMeta).Put(keyEventCount, u64(uint64(count))); err != nil {
		return 0, err
	}
	return count, nil
}

func eventCount(tx *bolt.Tx) (int, error) {
	v := tx.Bucket(bucketMeta).Get(keyEventCount)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: event count has %d bytes", ErrCorrupt, len(v))
	}
	return int(binary.BigEndian.Uint64(v)), nil
}

// EventCount is the number of stored events.
func (s *Store) EventCount() (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = eventCount(tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("count events: %w", err)
	}
	return n, nil
}

// Events returns the stored events that match f, newest (highest ID) first.
// Client matches exactly, Name as a case-insensitive substring, Since and
// Until bound Time as Since <= Time < Until (zero means unbounded). Limit
// 0 means DefaultEventLimit; larger than MaxEventLimit means MaxEventLimit;
// negative is invalid.
func (s *Store) Events(f model.EventFilter) ([]model.Event, error) {
	limit := f.Limit
	switch {
	case limit < 0:
		return nil, fmt.Errorf("read events: negative limit %d: %w", limit, model.ErrInvalid)
	case limit == 0:
		limit = DefaultEventLimit
	case limit > MaxEventLimit:
		limit = MaxEventLimit
	}
	name := strings.ToLower(f.Name)
	out := []model.Event{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			e, err := decodeEvent(k, v)
			if err != nil {
				return err
			}
			switch {
			case f.Client != "" && e.Client != f.Client:
			case name != "" && !strings.Contains(strings.ToLower(e.Name), name):
			case !f.Since.IsZero() && e.Time.Before(f.Since):
			case !f.Until.IsZero() && !e.Time.Before(f.Until):
			default:
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// eventFormat is the first byte of a stored event.
const eventFormat = 1

// encodeEvent returns the stored form of an event (the ID is the key): a format
// byte, the status as a uvarint, the time in time.MarshalBinary form and the
// strings, each after a uvarint length. It is several times faster to scan
// than JSON and half the size.
func encodeEvent(e model.Event) ([]byte, error) {
	t, err := e.Time.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode event time: %w", err)
	}
	if e.Status < 0 || e.Status > math.MaxInt32 {
		return nil, fmt.Errorf("encode event: status %d out of range: %w", e.Status, model.ErrInvalid)
	}
	b := make([]byte, 0, 64+len(e.Client)+len(e.MAC)+len(e.Name)+len(e.Proto)+len(e.Reason)+len(e.Category)+len(e.Target))
	b = append(b, eventFormat)
	b = binary.AppendUvarint(b, uint64(e.Status))
	b = binary.AppendUvarint(b, uint64(len(t)))
	b = append(b, t...)
	for _, f := range []string{e.Client, e.MAC, e.Name, e.Proto, e.Reason, e.Category} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	// Target came later: an event without one ends after Category, as
	// events stored before it do.
	if e.Target != "" {
		b = binary.AppendUvarint(b, uint64(len(e.Target)))
		b = append(b, e.Target...)
	}
	return b, nil
}

// errBadEvent says a stored event's bytes do not decode.
var errBadEvent = errors.New("malformed stored event")

// decodeEvent decodes the event stored under key k.
func decodeEvent(k, v []byte) (model.Event, error) {
	var e model.Event
	if len(k) != 8 {
		return e, fmt.Errorf("decode event: key of %d bytes: %w", len(k), errBadEvent)
	}
	e.ID = binary.BigEndian.Uint64(k)
	bad := func(what string) (model.Event, error) {
		return model.Event{}, fmt.Errorf("decode event %d: %s: %w", e.ID, what, errBadEvent)
	}
	if len(v) == 0 || v[0] != eventFormat {
		return bad("unknown format")
	}
	v = v[1:]
	status, n := binary.Uvarint(v)
	if n <= 0 || status > math.MaxInt32 {
		return bad("status")
	}
	e.Status = int(status)
	v = v[n:]
	field := func() ([]byte, bool) {
		l, n := binary.Uvarint(v)
		if n <= 0 || l > uint64(len(v)-n) {
			return nil, false
		}
		f := v[n : n+int(l)]
		v = v[n+int(l):]
		return f, true
	}
	t, ok := field()
	if !ok {
		return bad("time length")
	}
	if err := e.Time.UnmarshalBinary(t); err != nil {
		return bad("time: " + err.Error())
	}
	for _, dst := range []*string{&e.Client, &e.MAC, &e.Name, &e.Proto, &e.Reason, &e.Category} {
		f, ok := field()
		if !ok {
			return bad("string length")
		}
		*dst = string(f)
	}
	if len(v) != 0 {
		f, ok := field()
		if !ok || len(f) == 0 { // an empty target is never written
			return bad("target length")
		}
		e.Target = string(f)
	}
	if len(v) != 0 {
		return bad("trailing bytes")
	}
	return e, nil
}

// AppendEvents stores evs in one transaction (one fsync), each with a new
// ID and a Time of now when zero, and drops the oldest events beyond the
// bound. It is the batch writer's call: the daemon queues events and
// commits them at most every 100 ms. Nothing is stored when it fails.
func (s *Store) AppendEvents(evs []model.Event) error {
	if len(evs) == 0 {
		return nil
	}
	encs := make([][]byte, len(evs))
	now := time.Now()
	for i, e := range evs {
		if e.Time.IsZero() {
			e.Time = now
		}
		enc, err := encodeEvent(e)
		if err != nil {
			return fmt.Errorf("append events: %w", err)
		}
		encs[i] = enc
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for _, enc := range encs {
			id, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(u64(id), enc); err != nil {
				return err
			}
		}
		count, err := eventCount(tx)
		if err != nil {
			return err
		}
		_, err = s.trimEvents(tx, count+len(encs))
		return err
	})
	s.eventCommits.Add(1)
	if err != nil {
		return fmt.Errorf("append events: %w", err)
	}
	return nil
}

// EventCommits is the number of batch transactions AppendEvents ran.
func (s *Store) EventCommits() uint64 { return s.eventCommits.Load() }
