package main

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// queryDNS sends one A query for name (made absolute, no search list) to the
// first nameserver of /etc/resolv.conf and prints the answer's rcode, its
// authoritative flag and the addresses: what the cluster DNS itself said,
// which a resolver library would blur (NXDOMAIN and REFUSED both "not found").
func queryDNS(name string) error {
	ns, err := nameserver("/etc/resolv.conf")
	if err != nil {
		return err
	}
	q, err := dnsmessage.NewName(strings.TrimSuffix(name, ".") + ".")
	if err != nil {
		return fmt.Errorf("name %q: %w", name, err)
	}
	id := uint16(rand.Uint32())
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: q, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	req, err := msg.Pack()
	if err != nil {
		return err
	}
	conn, err := net.Dial("udp", netip.AddrPortFrom(ns, 53).String())
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write(req); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("no answer from %s: %w", ns, err)
	}
	var resp dnsmessage.Message
	if err := resp.Unpack(buf[:n]); err != nil {
		return fmt.Errorf("malformed answer from %s: %w", ns, err)
	}
	if resp.ID != id {
		return errors.New("answer with another query's id")
	}
	var as []string
	for _, a := range resp.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			as = append(as, netip.AddrFrom4(r.A).String())
		}
	}
	rcode, ok := rcodeNames[resp.RCode]
	if !ok {
		rcode = resp.RCode.String()
	}
	fmt.Printf("rcode=%s aa=%t a=%s\n", rcode, resp.Authoritative, strings.Join(as, ","))
	return nil
}

func nameserver(path string) (netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return netip.Addr{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "nameserver" {
			return netip.ParseAddr(f[1])
		}
	}
	return netip.Addr{}, fmt.Errorf("%s names no nameserver", path)
}

// rcodeNames are the RFC 1035 names tests and people read.
var rcodeNames = map[dnsmessage.RCode]string{
	dnsmessage.RCodeSuccess: "NOERROR", dnsmessage.RCodeFormatError: "FORMERR", dnsmessage.RCodeServerFailure: "SERVFAIL",
	dnsmessage.RCodeNameError: "NXDOMAIN", dnsmessage.RCodeNotImplemented: "NOTIMP", dnsmessage.RCodeRefused: "REFUSED",
}
