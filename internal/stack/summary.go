package stack

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// printSummary prints what runs where, each demo's outcome (claims, never
// a token), how long each step took, and what to do next.
func (s *session) printSummary() {
	w := s.o.Out
	total := time.Since(s.p.start)
	fmt.Fprintf(w, "\npodid is up (%s): Kubernetes v%s, one node %s (%s)\n", round(total), k8sVersion(s.o.Root), s.env["PODID_NODE_NAME"], s.env["PODID_NODE_IP"])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Fprintf(w, "  %s: %s\n", podidNamespace, strings.Join(s.componentsReady(ctx), ", "))
	fmt.Fprintf(w, "  identity provider: podid sts %s, tenant %s (podid's CLI now points at it)\n", s.stsURL, s.tenant)
	if !s.upgraded {
		fmt.Fprintf(w, "  (already installed with these values: helm not run; %d demo objects changed)\n", s.changed)
	}

	fmt.Fprintf(w, "\ndemos — the unmodified Azure SDK for Go; token claims only, never a token:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  \tDEMO\tPOD\tIDENTITY\tTOKEN PATH\tTOKEN AFTER\tRESOURCE")
	for _, r := range s.results {
		mark := "✓"
		if !r.ok {
			mark = "✗"
		}
		after := "-"
		if r.r.Program != "" {
			after = round(r.after).String()
		}
		res := r.r.Resource
		if res == "" {
			res = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s/%s\t%s\t%s\t%s\t%s\n", mark, r.d.Name, r.d.Namespace, r.pod, r.d.Identity, r.d.Path, after, res)
	}
	tw.Flush()
	for _, r := range s.results {
		if r.r.Program != "" && r.r.Program != "?" {
			fmt.Fprintf(w, "    %-26s aud=%s tid=%s oid=%s exp=%s\n", r.d.Name, r.r.Aud, r.r.Tid, r.r.Oid, r.r.Exp.Format(time.RFC3339))
		}
		if !r.ok {
			fmt.Fprintf(w, "    %-26s ✗ %s\n", r.d.Name, r.problem)
		}
	}

	var st []string
	for _, t := range s.p.steps {
		st = append(st, fmt.Sprintf("%s %s", t.short, round(t.took)))
	}
	fmt.Fprintf(w, "\nsteps: %s\n", strings.Join(st, " · "))
	doctor := "POD"
	for _, r := range s.results {
		if r.pod != "" {
			doctor = fmt.Sprintf("pod/%s -n %s", r.pod, r.d.Namespace)
			break
		}
	}
	fmt.Fprintf(w, "\nnext:\n")
	fmt.Fprintf(w, "  export KUBECONFIG=%s PATH=$PATH:%s\n", s.env["KUBECONFIG"], filepath.Join(s.o.Cache, "bin"))
	fmt.Fprintf(w, "  podid doctor %s    # why a pod does or does not get its token\n", doctor)
	fmt.Fprintf(w, "  podid identity list                      # the identities, from the sts's ARM API\n")
	fmt.Fprintf(w, "  podid down                               # remove everything (or ./hack/up.sh down)\n")
	fmt.Fprintf(w, "  log: %s\n", s.p.logPath)
}
