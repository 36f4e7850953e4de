package boottest

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloudsteer/cloudsteer/internal/nsexec"
)

// ScanResult is what a port scan found.
type ScanResult struct {
	Open     []int // a connection was accepted (TCP) or a reply came (UDP)
	Refused  int   // RST (TCP) or ICMP port unreachable (UDP)
	Silent   int   // nothing came back within the timeout (dropped)
	Other    int   // another error (host unreachable, ...)
	Duration time.Duration
}

func (r ScanResult) String() string {
	return fmt.Sprintf("%d open %v, %d refused, %d silent, %d other, in %s",
		len(r.Open), r.Open, r.Refused, r.Silent, r.Other, r.Duration.Round(time.Millisecond))
}

// ScanTCP connects to every port of ports on addr from inside network
// namespace ns: non-blocking connects in batches of batch sockets, each
// batch given timeout to complete. All sockets are made on one thread that
// has joined ns, so no goroutine runs elsewhere.
func ScanTCP(ns string, addr netip.Addr, ports []int, batch int, timeout time.Duration) (ScanResult, error) {
	var res ScanResult
	start := time.Now()
	err := nsexec.Do(ns, func() error {
		for i := 0; i < len(ports); i += batch {
			if err := scanTCPBatch(&res, addr, ports[i:min(i+batch, len(ports))], timeout); err != nil {
				return err
			}
		}
		return nil
	})
	res.Duration = time.Since(start)
	return res, err
}

func sockaddr(addr netip.Addr, port int) (int, unix.Sockaddr) {
	if addr.Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: port, Addr: addr.As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: port, Addr: addr.As16()}
}

func scanTCPBatch(res *ScanResult, addr netip.Addr, ports []int, timeout time.Duration) error {
	fds := make([]int, 0, len(ports))
	pfd := make([]unix.PollFd, 0, len(ports))
	port := make(map[int]int, len(ports))
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, p := range ports {
		fam, sa := sockaddr(addr, p)
		fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("scan tcp: socket: %w", err)
		}
		fds = append(fds, fd)
		switch err := unix.Connect(fd, sa); {
		case err == nil:
			res.Open = append(res.Open, p)
			continue
		case errors.Is(err, unix.EINPROGRESS):
		case errors.Is(err, unix.ECONNREFUSED):
			res.Refused++
			continue
		default:
			res.Other++
			continue
		}
		port[fd] = p
		pfd = append(pfd, unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT})
	}
	deadline := time.Now().Add(timeout)
	for len(pfd) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("scan tcp: poll: %w", err)
		}
		if n == 0 {
			break
		}
		keep := pfd[:0]
		for _, p := range pfd {
			if p.Revents == 0 {
				keep = append(keep, p)
				continue
			}
			soerr, err := unix.GetsockoptInt(int(p.Fd), unix.SOL_SOCKET, unix.SO_ERROR)
			switch {
			case err != nil:
				res.Other++
			case soerr == 0:
				res.Open = append(res.Open, port[int(p.Fd)])
			case unix.Errno(soerr) == unix.ECONNREFUSED:
				res.Refused++
			default:
				res.Other++
			}
		}
		pfd = keep
	}
	res.Silent += len(pfd)
	return nil
}

// UDPProbe is a datagram sent to a port to see whether anything answers.
type UDPProbe struct {
	Port    int
	Payload []byte
}

// ProbeUDP sends each probe from inside namespace ns to addr and waits up
// to timeout for replies: a reply means something listens (Open), an ICMP
// port unreachable means nothing does (Refused), silence that it was
// dropped (Silent).
func ProbeUDP(ns string, addr netip.Addr, probes []UDPProbe, timeout time.Duration) (ScanResult, error) {
	var res ScanResult
	start := time.Now()
	err := nsexec.Do(ns, func() error {
		var fds []int
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
		port := map[int]int{}
		var pfd []unix.PollFd
		for _, pr := range probes {
			fam, sa := sockaddr(addr, pr.Port)
			fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("probe udp: socket: %w", err)
			}
			fds = append(fds, fd)
			if err := unix.Connect(fd, sa); err != nil {
				res.Other++
				continue
			}
			payload := pr.Payload
			if len(payload) == 0 {
				payload = []byte("cloudsteer boot test probe\n")
			}
			// Twice: one datagram may be lost.
			for range 2 {
				if err := unix.Send(fd, payload, 0); err != nil && !errors.Is(err, unix.ECONNREFUSED) {
					return fmt.Errorf("probe udp %d: send: %w", pr.Port, err)
				}
			}
			port[fd] = pr.Port
			pfd = append(pfd, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		}
		deadline := time.Now().Add(timeout)
		buf := make([]byte, 2048)
		for len(pfd) > 0 {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("probe udp: poll: %w", err)
			}
			if n == 0 {
				break
			}
			keep := pfd[:0]
			for _, p := range pfd {
				if p.Revents == 0 {
					keep = append(keep, p)
					continue
				}
				_, _, err := unix.Recvfrom(int(p.Fd), buf, 0)
				switch {
				case err == nil:
					res.Open = append(res.Open, port[int(p.Fd)])
				case errors.Is(err, unix.ECONNREFUSED):
					res.Refused++
				default:
					res.Other++
				}
			}
			pfd = keep
		}
		res.Silent += len(pfd)
		return nil
	})
	res.Duration = time.Since(start)
	return res, err
}

// AllPorts is 1-65535.
func AllPorts() []int {
	ps := make([]int, 65535)
	for i := range ps {
		ps[i] = i + 1
	}
	return ps
}
