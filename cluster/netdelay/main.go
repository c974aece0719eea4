// Command netdelay adds a fixed delay to the packets iptables puts in an NFQUEUE:
// this machine's kernel has no sch_netem (so no `tc qdisc ... netem delay`) but
// has the xtables NFQUEUE target. Each packet is held for the delay of the first
// --delay rule whose source and destination blocks contain its addresses, then
// accepted; a packet no rule matches is accepted at once.
//
//	netdelay --queue 7 --delay 10.250.0.64/26,0.0.0.0/0=15ms --delay 10.250.0.128/26,0.0.0.0/0=40ms
//
// A rule is one-way. Placed on each network's ingress (rules.sh, README.md), each
// side adds its share of the round trip.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// rule delays packets from src to dst by delay. All packets of a flow match the
// same rule, and one rule has one delay, so its FIFO releases them in arrival
// order: that is what keeps each flow in order.
type rule struct {
	src, dst netip.Prefix
	delay    time.Duration
	held     chan heldPacket
}

type heldPacket struct {
	id  uint32
	due time.Time
}

type rules []*rule

func (rs *rules) String() string {
	var parts []string
	for _, r := range *rs {
		parts = append(parts, fmt.Sprintf("%s,%s=%s", r.src, r.dst, r.delay))
	}
	return strings.Join(parts, " ")
}

// Set parses SRC,DST=DURATION (0.0.0.0/0 for any address).
func (rs *rules) Set(v string) error {
	srcText, rest, ok1 := strings.Cut(v, ",")
	dstText, dur, ok2 := strings.Cut(rest, "=")
	if !ok1 || !ok2 {
		return errors.New("want SRC,DST=DURATION")
	}
	delay, err := time.ParseDuration(dur)
	if err != nil || delay < 0 {
		return fmt.Errorf("bad duration %q", dur)
	}
	src, err := netip.ParsePrefix(srcText)
	if err != nil {
		return err
	}
	dst, err := netip.ParsePrefix(dstText)
	if err != nil {
		return err
	}
	*rs = append(*rs, &rule{src: src.Masked(), dst: dst.Masked(), delay: delay})
	return nil
}

// match returns the first rule for the packet's addresses, or nil.
func (rs rules) match(packet []byte) *rule {
	var src, dst netip.Addr
	switch {
	case len(packet) >= 20 && packet[0]>>4 == 4:
		src = netip.AddrFrom4([4]byte(packet[12:16]))
		dst = netip.AddrFrom4([4]byte(packet[16:20]))
	case len(packet) >= 40 && packet[0]>>4 == 6:
		src = netip.AddrFrom16([16]byte(packet[8:24]))
		dst = netip.AddrFrom16([16]byte(packet[24:40]))
	default:
		return nil
	}
	for _, r := range rs {
		if r.src.Contains(src) && r.dst.Contains(dst) {
			return r
		}
	}
	return nil
}

// delayer takes packets from the queue's reader and releases them when due.
type delayer struct {
	rules  rules
	accept func(id uint32)

	mu       sync.Mutex // held while enqueuing, so no packet is held after stop()
	stopping bool
	done     chan struct{} // closed by stop(): release everything now

	delayed, direct, overflow atomic.Uint64
	releasers                 sync.WaitGroup
}

func (d *delayer) start() {
	d.done = make(chan struct{})
	for _, r := range d.rules {
		d.releasers.Add(1)
		go d.release(r)
	}
}

// packet is the queue reader's callback: hold the packet, or accept it at once.
func (d *delayer) packet(id uint32, payload []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rules.match(payload)
	if r == nil || r.delay == 0 || d.stopping {
		d.direct.Add(1)
		d.accept(id)
		return
	}
	select {
	case r.held <- heldPacket{id, time.Now().Add(r.delay)}:
		d.delayed.Add(1)
	default:
		// More held than --max-queue: fail open rather than grow or drop.
		d.overflow.Add(1)
		d.accept(id)
	}
}

// release accepts the rule's packets as they fall due: one timer per rule,
// sleeping until the oldest packet is due (no polling).
func (d *delayer) release(r *rule) {
	defer d.releasers.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for h := range r.held {
		if wait := time.Until(h.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-d.done:
				timer.Stop()
			}
		}
		d.accept(h.id)
	}
}

// stop accepts every held packet now and returns when none is held.
func (d *delayer) stop() {
	d.mu.Lock()
	d.stopping = true
	close(d.done)
	for _, r := range d.rules {
		close(r.held)
	}
	d.mu.Unlock()
	d.releasers.Wait()
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("netdelay: ")
	var rs rules
	queue := flag.Uint("queue", 0, "NFQUEUE number (iptables -j NFQUEUE --queue-num)")
	maxQueue := flag.Uint("max-queue", 4096, "packets held at most; the kernel accepts the excess at once (fail-open)")
	flag.Var(&rs, "delay", "SRC,DST=DURATION: hold packets from SRC to DST (CIDRs); repeat, first match wins")
	flag.Parse()
	if len(rs) == 0 || flag.NArg() > 0 || *queue > 65535 || *maxQueue == 0 {
		flag.Usage()
		os.Exit(2)
	}
	for _, r := range rs {
		r.held = make(chan heldPacket, *maxQueue)
	}

	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      uint16(*queue),
		MaxQueueLen:  uint32(*maxQueue),
		Copymode:     nfqueue.NfQnlCopyPacket,
		MaxPacketLen: 40, // an IPv6 header: the addresses are all we read
		AfFamily:     unix.AF_INET,
		// FailOpen: over MaxQueueLen the kernel accepts instead of dropping.
		// GSO: no segmenting of big packets just to show them to us.
		Flags: nfqueue.NfQaCfgFlagFailOpen | nfqueue.NfQaCfgFlagGSO,
	})
	if err != nil {
		log.Fatalf("open netlink: %v", err)
	}
	// One message per held packet can wait in the socket: make room for all of
	// them (about 1 KiB each with the kernel's overhead), past rmem_max.
	if err := forceReadBuffer(nf.Con, int(*maxQueue)*1024+(1<<20)); err != nil {
		log.Printf("receive buffer: %v (continuing)", err)
	}

	var verdictErrors, receiveErrors atomic.Uint64
	d := &delayer{rules: rs, accept: func(id uint32) {
		if err := nf.SetVerdict(id, nfqueue.NfAccept); err != nil && verdictErrors.Add(1) <= 10 {
			log.Printf("verdict for packet %d: %v", id, err)
		}
	}}
	d.start()

	sig, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	readCtx, stopReading := context.WithCancel(context.Background())
	fatal := make(chan error, 1)
	err = nf.RegisterWithErrorFunc(readCtx, func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			return 0
		}
		var payload []byte
		if a.Payload != nil {
			payload = *a.Payload
		}
		d.packet(*a.PacketID, payload)
		return 0
	}, func(err error) int {
		if readCtx.Err() != nil {
			return 1
		}
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOENT) {
			// ENOBUFS: messages were lost; their packets stay queued until we exit.
			// ENOENT: the kernel's answer to a verdict for a packet it no longer
			// holds (seen under load on the clusters). Neither ends the queue:
			// stopping here would silently turn the latency off (the rule bypasses).
			if receiveErrors.Add(1) <= 10 {
				log.Printf("receive: %v (continuing)", err)
			}
			return 0
		}
		fatal <- err
		return 1
	})
	if err != nil {
		log.Fatalf("bind queue %d: %v", *queue, err)
	}
	log.Printf("queue %d, at most %d held: %s", *queue, *maxQueue, rs.String())

	code := 0
	select {
	case <-sig.Done():
	case err := <-fatal:
		log.Printf("receive: %v", err)
		code = 1
	}
	// Accept what is held first: unbinding the queue would drop it.
	d.stop()
	stopReading()
	_ = nf.Close()
	log.Printf("exit: %d delayed, %d accepted at once, %d over --max-queue, %d verdict errors, "+
		"%d receive errors", d.delayed.Load(), d.direct.Load(), d.overflow.Load(),
		verdictErrors.Load(), receiveErrors.Load())
	os.Exit(code)
}

// forceReadBuffer sets SO_RCVBUFFORCE (root may exceed net.core.rmem_max).
func forceReadBuffer(c *netlink.Conn, bytes int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sockErr error
	if err := raw.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bytes)
	}); err != nil {
		return err
	}
	return sockErr
}
