package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

func TestEventCodec(t *testing.T) {
	full := model.Event{ID: 42, Time: t0.In(time.FixedZone("cest", 2*3600)), Client: "2001:db8::10", MAC: "02:00:00:00:00:01",
		Name: "xn--bcher-kva.example", Proto: "http", Reason: "blocked", Category: "Gambling & Betting", Status: 403, Target: "[2001:db8:113::10]:443"}
	good, err := encodeEvent(full)
	if err != nil {
		t.Fatal(err)
	}
	key := u64(42)

	t.Run("round trips", func(t *testing.T) {
		noTarget := full
		noTarget.Target = ""
		for _, e := range []model.Event{full, noTarget, {ID: 42, Time: t0}, {ID: 42, Time: time.Time{}, Name: strings.Repeat("n", 300)}} {
			v, err := encodeEvent(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeEvent(key, v)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(e, got); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
			_, wantOff := e.Time.Zone()
			if _, off := got.Time.Zone(); off != wantOff {
				t.Errorf("round trip: zone offset %d; want %d", off, wantOff)
			}
		}
	})

	tests := []struct {
		name string
		k, v []byte
	}{
		{"empty", key, nil},
		{"unknown format", key, append([]byte{2}, good[1:]...)},
		{"short key", []byte{1, 2}, good},
		{"truncated", key, good[:len(good)-1]},
		{"truncated in time", key, good[:6]},
		{"trailing byte", key, append(append([]byte{}, good...), 0)},
		{"huge length", key, []byte{eventFormat, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"bad varint", key, []byte{eventFormat, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"bad time", key, []byte{eventFormat, 0, 3, 9, 9, 9, 0, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeEvent(tt.k, tt.v); !errors.Is(err, errBadEvent) {
				t.Errorf("decodeEvent: err = %v; want errBadEvent", err)
			}
		})
	}

	if _, err := encodeEvent(model.Event{Status: -1}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("encodeEvent with negative status: err = %v; want ErrInvalid", err)
	}
}

// FuzzDecodeEvent checks that stored bytes, however damaged, decode to an
// error or to an event that encodes back to the same bytes, never a panic.
func FuzzDecodeEvent(f *testing.F) {
	for _, e := range []model.Event{
		{Time: t0, Client: "192.168.50.10", Name: "a.example", Proto: "tls", Reason: "blocked", Status: 403},
		{Time: t0.In(time.FixedZone("x", -5*3600)), MAC: "02:00:00:00:00:01", Category: "c"},
	} {
		v, err := encodeEvent(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Add([]byte{eventFormat})
	f.Fuzz(func(t *testing.T, v []byte) {
		e, err := decodeEvent(u64(7), v)
		if err != nil {
			return
		}
		again, err := encodeEvent(e)
		if err != nil {
			t.Fatalf("decoded event %+v does not encode: %v", e, err)
		}
		e2, err := decodeEvent(u64(7), again)
		if err != nil || !cmp.Equal(e, e2) {
			t.Fatalf("re-encoded event decodes to %+v, %v; want %+v", e2, err, e)
		}
	})
}
