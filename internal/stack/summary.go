package stack

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// printSummary prints what runs where, each demo's outcome (claims, never
// a token), how long each step took, and what to do next.
func (s *session) printSummary(w io.Writer, components []string) {
	total := time.Since(s.p.start)
	state := "podid is up"
	failed := 0
	for _, r := range s.results {
		if !r.ok {
			failed++
		}
	}
	if failed > 0 {
		state = fmt.Sprintf("podid is up, but %d demo(s) FAILED", failed)
	}
	fmt.Fprintf(w, "\n%s (%s): Kubernetes v%s, one node %s (%s)\n", state, round(total), k8sVersion(s.o.Root), s.env["PODID_NODE_NAME"], s.env["PODID_NODE_IP"])
	fmt.Fprintf(w, "  %s: %s\n", podidNamespace, strings.Join(components, ", "))
	fmt.Fprintf(w, "  identity provider: podid sts %s, tenant %s (podid's CLI now points at it)\n", s.stsURL, s.tenant)
	if s.podAuthority != "" {
		// The local cloud: pods reach the same sts by Azure's public name.
		fmt.Fprintf(w, "  pods see it as %s (the cluster DNS answers Azure's public names with podid's Services)\n", s.podAuthority)
	}
	if !s.upgraded {
		fmt.Fprintf(w, "  (already installed with these values: helm not run; %d demo objects changed)\n", s.changed)
	}

	fmt.Fprintf(w, "\ndemos — the unmodified Azure SDK for Go; a token's key claims, never the token:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  \tDEMO\tIDENTITY\tAUD\tTID\tOID\tEXP\tTOKEN AFTER\tRESOURCE")
	for _, r := range s.results {
		mark, aud, tid, oid, exp, after, res := "✓", "-", "-", "-", "-", "-", "-"
		if !r.ok {
			mark = "✗"
		}
		if r.r.Program != "" && r.r.Program != "?" && !r.d.NoToken {
			aud, tid, oid, exp = r.r.Aud, short(r.r.Tid), short(r.r.Oid), r.r.Exp.Format("Jan 2 15:04Z")
			after = round(r.after).String()
		}
		if r.r.Resource != "" {
			res = r.r.Resource
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mark, r.d.Name, r.d.Identity, aud, tid, oid, exp, after, clip(res, 52))
	}
	tw.Flush()
	fmt.Fprintf(w, "  (secret values shown are the demo's own data, set by podid up; podid never prints a real secret)\n")
	fmt.Fprintf(w, "  where they run, and how the token got there:\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range s.results {
		fmt.Fprintf(tw, "     %s\t%s/%s\t%s\n", r.d.Name, r.d.Namespace, r.pod, r.d.Path)
	}
	tw.Flush()
	for _, r := range s.results {
		if !r.ok {
			fmt.Fprintf(w, "  ✗ %s: %s\n", r.d.Name, r.problem)
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
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  podid doctor %s\t# why a pod does or does not get its token\n", doctor)
	fmt.Fprintf(tw, "  podid identity list\t# the identities, from the sts's ARM API\n")
	fmt.Fprintf(tw, "  podid down\t# remove everything (or ./hack/up.sh down)\n")
	tw.Flush()
	fmt.Fprintf(w, "  log: %s\n", s.p.logPath)
}

// short is a GUID's first block: enough to match `podid identity list`.
func short(id string) string {
	if i := strings.IndexByte(id, '-'); i > 0 {
		return id[:i] + "…"
	}
	return id
}
