package stack

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/podid/podid/internal/demoresult"
)

// demoTimeout bounds how long the demos may take to report.
const demoTimeout = 3 * time.Minute

// demoRow is one demo's outcome.
type demoRow struct {
	d        Demo
	pod      string
	r        demoresult.Result
	ok       bool
	problem  string        // why not ok
	after    time.Duration // pod created → first token
	lastLine string        // the pod's last log line, while waiting
}

// runDemos waits until every demo's pod printed its result line, then
// checks each against its identity and audience.
func (s *session) runDemos(ctx context.Context) error {
	rows := make([]demoRow, len(Demos))
	for i, d := range Demos {
		rows[i].d = d
	}
	deadline := time.Now().Add(demoTimeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		pending := 0
		var waiting []string
		for i := range rows {
			if rows[i].ok || rows[i].problem != "" && rows[i].r.Program != "" {
				continue
			}
			s.poll(ctx, &rows[i])
			if !rows[i].ok && rows[i].r.Program == "" {
				pending++
				w := rows[i].d.Name
				if rows[i].lastLine != "" {
					w += ": " + clip(rows[i].lastLine, 80)
				}
				waiting = append(waiting, w)
			}
		}
		if pending == 0 {
			break
		}
		s.p.setStatus(fmt.Sprintf("%d/%d have a result; waiting for %s", len(rows)-pending, len(rows), strings.Join(waiting, " | ")))
		if time.Now().After(deadline) {
			for i := range rows {
				if !rows[i].ok && rows[i].problem == "" {
					rows[i].problem = fmt.Sprintf("no result in %s (last log line: %q)", demoTimeout, rows[i].lastLine)
				}
			}
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	s.results = rows
	return nil // a failed demo is reported in the summary, then by Up
}

// poll reads a demo's pod log once and, if the result line is there,
// checks it.
func (s *session) poll(ctx context.Context, row *demoRow) {
	d := row.d
	pod, err := s.k.newestPod(ctx, d.Namespace, d.Selector)
	if err != nil {
		row.lastLine = "listing pods: " + err.Error()
		return
	}
	if pod == nil {
		row.lastLine = "no pod yet"
		return
	}
	row.pod = pod.Name
	log, err := s.k.podLog(ctx, d.Namespace, pod.Name, d.Container)
	if err != nil {
		row.lastLine = "pod " + string(pod.Status.Phase)
		return
	}
	if l := strings.Split(strings.TrimSpace(string(log)), "\n"); len(l) > 0 {
		row.lastLine = l[len(l)-1]
	}
	r, err := demoresult.Find(log)
	if errors.Is(err, demoresult.ErrNoResult) {
		return
	}
	if err != nil {
		row.r.Program = "?"
		row.problem = err.Error()
		return
	}
	row.r = r
	if !r.TokenAt.IsZero() {
		row.after = r.TokenAt.Sub(pod.CreationTimestamp.Time)
	}
	row.problem = s.check(d, r)
	row.ok = row.problem == ""
}

// check is what makes a demo pass: the token is for the demo's identity,
// from the tenant, for the audience; and the resource call, if any, worked.
func (s *session) check(d Demo, r demoresult.Result) string {
	id, ok := s.created[d.Identity]
	var p []string
	if d.NoToken {
		// The driver got the token; the pod shows what it was given.
		switch {
		case r.Error != "":
			p = append(p, "mounted secret: "+r.Error)
		case d.Want == "" || !strings.Contains(r.Resource, strconv.Quote(d.Want)):
			p = append(p, fmt.Sprintf("the pod reported %q, not the secret's value %q", r.Resource, d.Want))
		}
		return strings.Join(p, "; ")
	}
	if !ok {
		p = append(p, "unknown identity "+d.Identity)
	} else if r.Oid != id.PrincipalID {
		p = append(p, fmt.Sprintf("oid %s is not %s's principal %s", r.Oid, d.Identity, id.PrincipalID))
	}
	if r.Tid != s.tenant {
		p = append(p, fmt.Sprintf("tid %s is not the tenant %s", r.Tid, s.tenant))
	}
	if strings.TrimRight(r.Aud, "/") != strings.TrimRight(d.Audience, "/") {
		p = append(p, fmt.Sprintf("aud %s is not %s", r.Aud, d.Audience))
	}
	if !r.Exp.After(time.Now()) {
		p = append(p, "the token has expired")
	}
	if r.Error != "" {
		p = append(p, "resource call failed: "+r.Error)
	} else if d.Resource && r.Resource == "" {
		p = append(p, "no resource call result")
	} else if d.Want != "" && !strings.Contains(r.Resource, strconv.Quote(d.Want)) {
		p = append(p, fmt.Sprintf("the resource returned %q, not %q", r.Resource, d.Want))
	}
	return strings.Join(p, "; ")
}

// DemoError lists the demos that did not get their token or resource call.
type DemoError struct{ Failed []string }

func (e *DemoError) Error() string {
	return fmt.Sprintf("%d demo(s) failed: %s", len(e.Failed), strings.Join(e.Failed, "; "))
}

func (s *session) demoErr() error {
	var failed []string
	for _, r := range s.results {
		if !r.ok {
			failed = append(failed, fmt.Sprintf("%s (%s/%s): %s — podid doctor pod/%s -n %s explains why; log: %s",
				r.d.Name, r.d.Namespace, r.pod, r.problem, r.pod, r.d.Namespace, s.p.logPath))
		}
	}
	if failed == nil {
		return nil
	}
	return &DemoError{failed}
}
