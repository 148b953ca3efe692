package stack

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// heartbeat is how long a step may run without a line on the terminal.
const heartbeat = 10 * time.Second

// keepLogs is how many run logs stay under $PODID_CACHE/logs.
const keepLogs = 10

// progress prints each step's phase and elapsed time to the terminal, a
// heartbeat with the step's latest status while it runs, and keeps every
// underlying line in the run's log file.
type progress struct {
	term    io.Writer
	verbose bool
	start   time.Time

	mu      sync.Mutex
	logFile *os.File
	logPath string
	status  string
	printed time.Time
	steps   []stepTime
	secrets []string // never written anywhere (redact)
}

// redact makes every later line replace secret with "[redacted]": a tool
// that echoes its values (helm does) must not put the admin secret on
// the terminal or in the log.
func (p *progress) redact(secret string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if secret != "" {
		p.secrets = append(p.secrets, secret)
	}
}

type stepTime struct {
	short string
	took  time.Duration
}

// newProgress opens a new log file named after the command and the time.
func newProgress(term io.Writer, verbose bool, dir, command string) (*progress, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	now := time.Now()
	path := filepath.Join(dir, fmt.Sprintf("podid-%s-%s.log", command, now.UTC().Format("20060102T150405Z")))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	prune(dir, "podid-"+command+"-", keepLogs)
	return &progress{term: term, verbose: verbose, start: now, logFile: f, logPath: path}, nil
}

// prune removes all but the newest keep logs with the prefix (names sort by time).
func prune(dir, prefix string, keep int) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var logs []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) && strings.HasSuffix(e.Name(), ".log") {
			logs = append(logs, e.Name())
		}
	}
	slices.Sort(logs)
	for len(logs) > keep {
		_ = os.Remove(filepath.Join(dir, logs[0]))
		logs = logs[1:]
	}
}

func (p *progress) close() { _ = p.logFile.Close() }

// say prints a line on the terminal and in the log.
func (p *progress) say(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf(format, a...)
	fmt.Fprintln(p.term, line)
	fmt.Fprintf(p.logFile, "%s %s\n", time.Now().UTC().Format(time.TimeOnly), line)
	p.printed = time.Now()
}

// line records an underlying command's output line: always in the log, on
// the terminal with --verbose, else as the step's status for the heartbeat.
func (p *progress) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, sec := range p.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	fmt.Fprintf(p.logFile, "%s   | %s\n", time.Now().UTC().Format(time.TimeOnly), s)
	if p.verbose {
		fmt.Fprintf(p.term, "    | %s\n", s)
		p.printed = time.Now()
		return
	}
	if s = strings.TrimSpace(s); s != "" {
		p.status = s
	}
}

// setStatus is what the heartbeat shows next.
func (p *progress) setStatus(s string) {
	p.mu.Lock()
	p.status = s
	p.mu.Unlock()
	fmt.Fprintf(p.logFile, "%s   status: %s\n", time.Now().UTC().Format(time.TimeOnly), s)
}

// Writer is an io.Writer that feeds p.line, one call per line.
func (p *progress) writer() io.WriteCloser { return &lineWriter{p: p} }

type lineWriter struct {
	p   *progress
	buf []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := slices.Index(w.buf, '\n')
		if i < 0 {
			break
		}
		w.p.line(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a line without end: show what there is
		w.p.line(string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(b), nil
}

func (w *lineWriter) Close() error {
	if len(w.buf) > 0 {
		w.p.line(string(w.buf))
		w.buf = nil
	}
	return nil
}

// step runs fn as the named phase: "▸ name", a heartbeat every 10 s of
// silence, then "✓ name  4.2s" or "✗ name  4.2s". short names it in the
// summary's timing line.
func (p *progress) step(ctx context.Context, short, name string, fn func(ctx context.Context) error) error {
	t := time.Now()
	p.mu.Lock()
	p.status = ""
	p.mu.Unlock()
	p.say("▸ %s", name)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the heartbeat: owned by this call, stopped before it returns
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				p.mu.Lock()
				quiet := time.Since(p.printed) >= heartbeat
				status := p.status
				p.mu.Unlock()
				if quiet {
					if status == "" {
						status = "working"
					}
					p.say("  %s  %s: %s", round(time.Since(t)), name, clip(status, 110))
				}
			}
		}
	}()
	err := fn(ctx)
	close(done)
	wg.Wait()
	took := time.Since(t)
	p.mu.Lock()
	p.steps = append(p.steps, stepTime{short, took})
	p.mu.Unlock()
	if err != nil {
		p.say("✗ %s  %s", name, round(took))
		return err
	}
	p.say("✓ %s  %s", name, round(took))
	return nil
}

func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
