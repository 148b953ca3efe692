package intercept

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultCNIResultsDir is where libcni (used by containerd and CRI-O)
// caches the result of every CNI ADD until the matching DEL.
const DefaultCNIResultsDir = "/var/lib/cni/results"

// maxResultSize bounds one cached result file.
const maxResultSize = 1 << 20

// Sandbox is what the node's CNI records say about one pod's network: the
// truth of who owns an address, from the moment the sandbox exists and
// independent of the API server.
type Sandbox struct {
	ContainerID string
	// Pod identity as the runtime passed it to the CNI (K8S_POD_*).
	PodUID, PodNamespace, PodName string
	// HostIf is the host side of the pod's interface (a veth).
	HostIf string
	// Bridge is the bridge HostIf is a port of; empty for routed CNIs.
	Bridge string
	// MAC is the pod-side interface's hardware address.
	MAC net.HardwareAddr
	// IPs are the pod's addresses.
	IPs []netip.Addr
}

// cachedResult is the part of libcni's cache file podid reads.
type cachedResult struct {
	Kind        string      `json:"kind"`
	ContainerID string      `json:"containerId"`
	Config      []byte      `json:"config"` // the network configuration, JSON
	IfName      string      `json:"ifName"`
	CNIArgs     [][2]string `json:"cniArgs"`
	Result      struct {
		Interfaces []struct {
			Name    string `json:"name"`
			MAC     string `json:"mac"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs []struct {
			Interface *int   `json:"interface"`
			Address   string `json:"address"`
		} `json:"ips"`
	} `json:"result"`
}

// bridgeOf returns the bridge a bridge-plugin network attaches pods to
// (the plugin's default is cni0), or "" when no plugin is a bridge.
func bridgeOf(conf []byte) string {
	type plugin struct {
		Type   string `json:"type"`
		Bridge string `json:"bridge"`
	}
	var c struct {
		plugin
		Plugins []plugin `json:"plugins"`
	}
	if json.Unmarshal(conf, &c) != nil {
		return ""
	}
	for _, p := range append([]plugin{c.plugin}, c.Plugins...) {
		if p.Type == "bridge" {
			if p.Bridge == "" {
				return "cni0"
			}
			return p.Bridge
		}
	}
	return ""
}

// ErrLoopbackOnly marks a record of a network that only brings up the
// sandbox's loopback (containerd's cni-loopback): not a pod interface.
var ErrLoopbackOnly = errors.New("CNI record of the sandbox's loopback only")

// ParseCNIResult reads one libcni cache file.
func ParseCNIResult(data []byte) (Sandbox, error) {
	var c cachedResult
	if err := json.Unmarshal(data, &c); err != nil {
		return Sandbox{}, fmt.Errorf("not a CNI cache record: %w", err)
	}
	if c.Kind != "cniCacheV1" {
		return Sandbox{}, fmt.Errorf("CNI cache record of kind %q, want cniCacheV1", c.Kind)
	}
	sb := Sandbox{ContainerID: c.ContainerID, Bridge: bridgeOf(c.Config)}
	for _, a := range c.CNIArgs {
		switch a[0] {
		case "K8S_POD_UID":
			sb.PodUID = a[1]
		case "K8S_POD_NAMESPACE":
			sb.PodNamespace = a[1]
		case "K8S_POD_NAME":
			sb.PodName = a[1]
		}
	}
	if sb.PodNamespace == "" || sb.PodName == "" {
		return sb, errors.New("CNI cache record names no pod (K8S_POD_NAMESPACE, K8S_POD_NAME)")
	}
	ifs := c.Result.Interfaces
	if c.IfName == "lo" && len(ifs) == 1 && ifs[0].Sandbox != "" {
		return sb, ErrLoopbackOnly
	}
	var pod, host []int
	for i, f := range ifs {
		switch {
		case f.Sandbox != "":
			if f.Name == c.IfName {
				pod = append(pod, i)
			}
		case f.Name != sb.Bridge:
			host = append(host, i)
		}
	}
	if len(pod) != 1 || len(host) != 1 {
		return sb, fmt.Errorf("CNI result of pod %s/%s has %d pod-side interfaces named %q and %d host-side interfaces: cannot tell the pod's interface", sb.PodNamespace, sb.PodName, len(pod), c.IfName, len(host))
	}
	sb.HostIf = ifs[host[0]].Name
	mac, err := net.ParseMAC(ifs[pod[0]].MAC)
	if err != nil || len(mac) != 6 {
		return sb, fmt.Errorf("CNI result of pod %s/%s: interface %s has no Ethernet address", sb.PodNamespace, sb.PodName, ifs[pod[0]].Name)
	}
	sb.MAC = mac
	for _, ip := range c.Result.IPs {
		if ip.Interface != nil && *ip.Interface != pod[0] {
			continue
		}
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			return sb, fmt.Errorf("CNI result of pod %s/%s: address %q: %w", sb.PodNamespace, sb.PodName, ip.Address, err)
		}
		sb.IPs = append(sb.IPs, p.Addr().Unmap())
	}
	if len(sb.IPs) == 0 {
		return sb, fmt.Errorf("CNI result of pod %s/%s has no address", sb.PodNamespace, sb.PodName)
	}
	if strings.ContainsAny(sb.HostIf, " \t\n!+") || len(sb.HostIf) > 15 {
		return sb, fmt.Errorf("CNI result of pod %s/%s: host interface name %q is not a plain interface name", sb.PodNamespace, sb.PodName, sb.HostIf)
	}
	return sb, nil
}

// ReadCNIResults reads every record in dir (a missing dir holds none).
// Records that cannot be read are returned as errors, one per file, and
// left out: their pods are not guarded, so they get no token.
func ReadCNIResults(dir string) ([]Sandbox, []error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("read CNI results: %w", err)}
	}
	var (
		out  []Sandbox
		errs []error
	)
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := readBounded(p)
		if err == nil {
			var sb Sandbox
			if sb, err = ParseCNIResult(data); err == nil {
				out = append(out, sb)
				continue
			}
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrLoopbackOnly) { // gone (a DEL while listing), or not a pod interface
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out, errs
}

func readBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxResultSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxResultSize {
		return nil, fmt.Errorf("larger than %d bytes", maxResultSize)
	}
	return data, nil
}
