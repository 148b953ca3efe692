package stack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// host is what the preflight reads from the machine (a value, so the
// checks are tested without changing the machine).
type host struct {
	euid int
	// cgroupV2 or, on v1, the controllers present.
	cgroupV2  bool
	cgroupsV1 map[string]bool
	// freeBytes under $PODID_CACHE; cold when the Kubernetes binaries are
	// not built yet (the build and Go caches need far more).
	freeBytes uint64
	cold      bool
}

func readHost(cache, k8sBin string) host {
	h := host{euid: os.Geteuid(), cgroupsV1: map[string]bool{}}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		h.cgroupV2 = true
	}
	for _, c := range []string{"cpu", "memory", "pids"} {
		if fi, err := os.Stat(filepath.Join("/sys/fs/cgroup", c)); err == nil && fi.IsDir() {
			h.cgroupsV1[c] = true
		}
	}
	dir := cache
	for { // the nearest existing directory: the cache may not exist yet
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		h.freeBytes = st.Bavail * uint64(st.Bsize)
	}
	if _, err := os.Stat(filepath.Join(k8sBin, "kubelet")); err != nil {
		h.cold = true
	}
	return h
}

// Disk podid up needs free under $PODID_CACHE: the cluster's images, etcd and
// logs; cold, also the Kubernetes and helm builds and their Go caches.
const (
	needWarm = 4 << 30
	needCold = 12 << 30
)

// PreflightError is a machine podid up cannot run on, with the fix.
type PreflightError struct{ Problem, Fix string }

func (e *PreflightError) Error() string { return e.Problem + "\n  fix: " + e.Fix }

// preflight refuses, before anything is installed or started, what would
// make up fail half-way. Ports and a cluster of someone else's are checked
// by hack/cluster.sh up, which knows the node's ports.
func preflight(h host, cache string) error {
	var errs []error
	if h.euid != 0 {
		errs = append(errs, &PreflightError{"podid up must run as root (it starts a kubelet, containerd and changes iptables)", "run it as root: sudo podid up (or sudo ./hack/up.sh)"})
	}
	if !h.cgroupV2 {
		for _, c := range []string{"cpu", "memory", "pids"} {
			if !h.cgroupsV1[c] {
				errs = append(errs, &PreflightError{
					fmt.Sprintf("no cgroup support for %q (neither cgroup v2 at /sys/fs/cgroup nor a v1 %s hierarchy): the kubelet cannot run here", c, c),
					"mount cgroup2 at /sys/fs/cgroup (or run podid up on a host or VM with cgroups)"})
				break
			}
		}
	}
	need := uint64(needWarm)
	what := "the cluster's images, etcd and logs"
	if h.cold {
		need, what = needCold, "the Kubernetes and helm builds, their Go caches, and the cluster"
	}
	if h.freeBytes < need {
		errs = append(errs, &PreflightError{
			fmt.Sprintf("only %d MiB free under %s; podid up needs %d GiB for %s", h.freeBytes>>20, cache, need>>30, what),
			"free some space, or set PODID_CACHE to a directory on a larger disk"})
	}
	return errors.Join(errs...)
}
