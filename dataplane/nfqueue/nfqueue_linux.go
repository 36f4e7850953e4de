// Package nfqueue is a small NFQUEUE binding (nfnetlink_queue) on
// github.com/mdlayher/netlink: bind a queue number, receive the queued
// packets (the whole L3 packet), and give each a verdict, optionally with
// a new packet mark. It holds no kernel state beyond its netlink socket:
// when the socket closes (also when the process dies) the kernel unbinds
// the queue and drops what was still queued.
package nfqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Verdicts (include/uapi/linux/netfilter.h).
const (
	Drop   uint32 = 0 // NF_DROP
	Accept uint32 = 1 // NF_ACCEPT: on to the hook's next entry
	Repeat uint32 = 4 // NF_REPEAT: run the chain that queued the packet again
)

// nfnetlink_queue constants (include/uapi/linux/netfilter/nfnetlink_queue.h).
const (
	subsysQueue = 3 // NFNL_SUBSYS_QUEUE

	msgPacket  = 0 // NFQNL_MSG_PACKET
	msgVerdict = 1 // NFQNL_MSG_VERDICT
	msgConfig  = 2 // NFQNL_MSG_CONFIG

	attrPacketHdr  = 1  // NFQA_PACKET_HDR
	attrVerdictHdr = 2  // NFQA_VERDICT_HDR
	attrMark       = 3  // NFQA_MARK
	attrPayload    = 10 // NFQA_PAYLOAD

	cfgCmd    = 1 // NFQA_CFG_CMD
	cfgParams = 2 // NFQA_CFG_PARAMS
	cfgMaxLen = 3 // NFQA_CFG_QUEUE_MAXLEN

	cmdBind = 1 // NFQNL_CFG_CMD_BIND

	copyPacket = 2 // NFQNL_COPY_PACKET
)

// Packet is one queued packet.
type Packet struct {
	ID      uint32 // the kernel's packet id, for Verdict
	HWProto uint16 // ETH_P_IP or ETH_P_IPV6 (host order)
	Hook    uint8  // the netfilter hook it was queued at
	Mark    uint32 // its mark when queued (0 when the kernel sent none)
	Payload []byte // the L3 packet (owned by the caller)
}

// Queue is a bound NFQUEUE.
type Queue struct {
	conn      *netlink.Conn
	num       uint16
	closed    atomic.Bool
	malformed atomic.Uint64
}

// Malformed counts packet messages Receive skipped because their
// attributes did not parse.
func (q *Queue) Malformed() uint64 { return q.malformed.Load() }

// Open binds queue number num with copy mode "whole packet" (up to
// 0xffff bytes) and a kernel queue of at most maxLen packets (the kernel's
// default when 0).
func Open(num uint16, maxLen uint32) (*Queue, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("open nfqueue %d: dial netlink: %w", num, err)
	}
	q := &Queue{conn: conn, num: num}
	// Overruns are counted by the kernel; a reader that keeps going is
	// better than one that stops on ENOBUFS.
	_ = conn.SetOption(netlink.NoENOBUFS, true)
	_ = conn.SetReadBuffer(4 << 20)
	if err := q.config(cmdBind, maxLen); err != nil {
		conn.Close()
		return nil, fmt.Errorf("open nfqueue %d: %w", num, err)
	}
	return q, nil
}

func (q *Queue) header(msg uint8) netlink.Header {
	return netlink.Header{Type: netlink.HeaderType(subsysQueue<<8 | uint16(msg)), Flags: netlink.Request}
}

// nfgenmsg: family, version, resource id (the queue number, big endian).
func (q *Queue) nfgen() []byte {
	return []byte{unix.AF_UNSPEC, 0, byte(q.num >> 8), byte(q.num)}
}

func (q *Queue) config(cmd uint8, maxLen uint32) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Bytes(cfgCmd, []byte{cmd, 0, 0, 0}) // command, pad, pf (unused since 3.8)
	if cmd == cmdBind {
		params := binary.BigEndian.AppendUint32(nil, 0xffff)
		ae.Bytes(cfgParams, append(params, copyPacket))
		if maxLen > 0 {
			ae.Uint32(cfgMaxLen, maxLen)
		}
	}
	attrs, err := ae.Encode()
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	h := q.header(msgConfig)
	h.Flags |= netlink.Acknowledge
	if _, err := q.conn.Execute(netlink.Message{Header: h, Data: append(q.nfgen(), attrs...)}); err != nil {
		return fmt.Errorf("config command %d: %w", cmd, err)
	}
	return nil
}

// ErrClosed is returned by Receive after Close.
var ErrClosed = errors.New("nfqueue closed")

// Receive blocks until the kernel sends packets and returns them.
func (q *Queue) Receive() ([]Packet, error) {
	for {
		msgs, err := q.conn.Receive()
		if err != nil {
			if q.closed.Load() {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("receive from nfqueue %d: %w", q.num, err)
		}
		var out []Packet
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(subsysQueue<<8|msgPacket) || len(m.Data) < 4 {
				continue
			}
			p, err := parsePacket(m.Data[4:])
			if err != nil {
				// Without its id the packet cannot be given a verdict;
				// it stays queued until the queue is closed. Never seen.
				q.malformed.Add(1)
				continue
			}
			out = append(out, p)
		}
		if len(out) > 0 {
			return out, nil
		}
	}
}

func parsePacket(b []byte) (Packet, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Packet{}, fmt.Errorf("decode packet attributes: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	var p Packet
	hdr := false
	for ad.Next() {
		switch ad.Type() {
		case attrPacketHdr:
			h := ad.Bytes()
			if len(h) < 7 {
				return Packet{}, errors.New("short packet header attribute")
			}
			p.ID = binary.BigEndian.Uint32(h[0:4])
			p.HWProto = binary.BigEndian.Uint16(h[4:6])
			p.Hook = h[6]
			hdr = true
		case attrMark:
			p.Mark = ad.Uint32()
		case attrPayload:
			p.Payload = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return Packet{}, fmt.Errorf("decode packet attributes: %w", err)
	}
	if !hdr {
		return Packet{}, errors.New("packet without header attribute")
	}
	return p, nil
}

// Verdict decides packet id: Accept, Drop or Repeat. When mark is not nil
// the packet's mark is set to *mark first. Safe for concurrent use and
// with a Receive in progress.
func (q *Queue) Verdict(id, verdict uint32, mark *uint32) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	v := binary.BigEndian.AppendUint32(nil, verdict)
	ae.Bytes(attrVerdictHdr, binary.BigEndian.AppendUint32(v, id))
	if mark != nil {
		ae.Uint32(attrMark, *mark)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return fmt.Errorf("encode verdict: %w", err)
	}
	if _, err := q.conn.Send(netlink.Message{Header: q.header(msgVerdict), Data: append(q.nfgen(), attrs...)}); err != nil {
		return fmt.Errorf("verdict for packet %d on nfqueue %d: %w", id, q.num, err)
	}
	return nil
}

// SetReadDeadline bounds a blocked Receive (for tests and shutdown).
func (q *Queue) SetReadDeadline(t time.Time) error { return q.conn.SetReadDeadline(t) }

// Close unbinds the queue and closes the socket; the kernel drops the
// packets still queued.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	return q.conn.Close()
}
