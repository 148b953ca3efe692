package stack

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// ScriptError is a failed hack script or tool: what failed, the line that
// says why, the fix when it is a known cause, and where the full output is.
type ScriptError struct {
	Command string
	Reason  string
	Fix     string
	Log     string
}

func (e *ScriptError) Error() string {
	s := e.Command + " failed"
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Fix != "" {
		s += "\n  fix: " + e.Fix
	}
	return s + "\n  full output: " + e.Log
}

// tail keeps the last lines a command printed, for its error.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, s)
	if len(t.lines) > 40 {
		t.lines = t.lines[len(t.lines)-40:]
	}
}

func (t *tail) text() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// run runs a command with its output in the log (and the heartbeat's status);
// stdout is also returned.
func (s *session) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.o.Root
	cmd.Env = append(os.Environ(), "PODID_CACHE="+s.o.Cache, "PATH="+os.Getenv("PATH")+":/usr/local/go/bin")
	if s.o.Verbose {
		cmd.Env = append(cmd.Env, "PODID_VERBOSE=1")
	}
	var out bytes.Buffer
	var t tail
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	w := s.p.writer()
	cmd.Stderr = pw
	so := &teeLines{buf: &out, w: w}
	cmd.Stdout = so
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		t.add(sc.Text())
		_, _ = w.Write(append(sc.Bytes(), '\n'))
	}
	pr.Close()
	err = cmd.Wait()
	_ = w.Close()
	if err != nil {
		cmdline := strings.Join(append([]string{rel(s.o.Root, name)}, args...), " ")
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", cmdline, ctx.Err())
		}
		reason, fix := diagnose(t.text() + "\n" + out.String())
		return nil, &ScriptError{Command: cmdline, Reason: reason, Fix: fix, Log: s.p.logPath}
	}
	return out.Bytes(), nil
}

// teeLines keeps stdout and shows it in the log too.
type teeLines struct {
	buf *bytes.Buffer
	w   interface{ Write([]byte) (int, error) }
}

func (t *teeLines) Write(b []byte) (int, error) {
	t.buf.Write(b)
	return t.w.Write(b)
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

// causes are known failures of the install and node scripts and their fix,
// matched on the output; the scripts' own "ERROR: …" lines say the rest.
var causes = []struct{ match, reason, fix string }{
	{"Temporary failure resolving", "Debian's apt repositories are unreachable", "check the network or the apt proxy (/etc/apt/apt.conf.d), then run podid up again"},
	{"Failed to fetch", "Debian's apt repositories are unreachable", "check the network or the apt proxy (/etc/apt/apt.conf.d), then run podid up again"},
	{"Could not resolve host", "a download host is unreachable", "check the network (GOPROXY for Go modules, apt for Debian packages), then run podid up again"},
	{"proxy.golang.org", "the Go module proxy is unreachable", "check the network or set GOPROXY to a reachable proxy, then run podid up again"},
	{"dial tcp", "a network connection failed", "check the network (GOPROXY for Go modules, apt for Debian packages), then run podid up again"},
	{"no space left on device", "the disk is full", "free space under $PODID_CACHE (or point PODID_CACHE elsewhere), then run podid up again"},
}

// diagnose returns the output's ERROR line (or last line) and a fix when
// the output shows a known cause.
func diagnose(out string) (reason, fix string) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "ERROR: ") {
			reason = strings.TrimPrefix(l, "ERROR: ")
			break
		}
	}
	if strings.Contains(reason, "listed above") { // hack/cluster.sh's leftovers: name them
		var left []string
		for _, l := range lines {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "LEFTOVER ") {
				left = append(left, strings.TrimPrefix(l, "LEFTOVER "))
			}
		}
		if len(left) > 0 {
			reason += ": " + strings.Join(left, "; ")
		}
	}
	if reason == "" && len(lines) > 0 {
		reason = strings.TrimSpace(lines[len(lines)-1])
	}
	for _, c := range causes {
		if strings.Contains(out, c.match) {
			if reason == "" {
				reason = c.reason
			} else {
				reason = c.reason + " (" + reason + ")"
			}
			return reason, c.fix
		}
	}
	return reason, ""
}
