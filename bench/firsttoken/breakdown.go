package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// A phase is one histogram series whose mean over the run is part of the
// breakdown: the kubelet's and the API server's own figures for the same
// pods (sum and count before and after, so only this run's operations count).
type phase struct {
	source, metric string
	labels         map[string]string // every one must match
	what           string
}

// phases, in the order a pod goes through them.
var phases = []phase{
	{"apiserver", "apiserver_admission_webhook_admission_duration_seconds", map[string]string{"operation": "CREATE", "type": "admit"}, "mutating webhooks, each call (podid's: the pod's env and token volume)"},
	{"apiserver", "apiserver_admission_webhook_admission_duration_seconds", map[string]string{"operation": "CREATE", "type": "validating"}, "validating webhooks, each call"},
	{"apiserver", "apiserver_request_duration_seconds", map[string]string{"verb": "POST", "resource": "pods", "subresource": ""}, "API server: a pod's create, server side"},
	{"kubelet", "kubelet_pod_worker_start_duration_seconds", nil, "kubelet: pod seen → its worker starts"},
	{"kubelet", "storage_operation_duration_seconds", map[string]string{"operation_name": "volume_mount", "volume_plugin": "kubernetes.io/projected"}, "kubelet: mount a projected volume (SA token, CA)"},
	{"kubelet", "storage_operation_duration_seconds", map[string]string{"operation_name": "volume_mount", "volume_plugin": "kubernetes.io/configmap"}, "kubelet: mount a ConfigMap volume"},
	{"kubelet", "kubelet_runtime_operations_duration_seconds", map[string]string{"operation_type": "run_podsandbox"}, "containerd: the sandbox (pause, netns, CNI)"},
	{"kubelet", "kubelet_runtime_operations_duration_seconds", map[string]string{"operation_type": "image_status"}, "containerd: image status (present: no pull)"},
	{"kubelet", "kubelet_runtime_operations_duration_seconds", map[string]string{"operation_type": "create_container"}, "containerd: create the container"},
	{"kubelet", "kubelet_runtime_operations_duration_seconds", map[string]string{"operation_type": "start_container"}, "containerd: start the container"},
	{"kubelet", "kubelet_pod_start_sli_duration_seconds", nil, "kubelet: pod created → running, seen by the kubelet's watch (its SLI)"},
	{"agent", "podid_agent_request_duration_seconds", map[string]string{"cache": "miss"}, "agent: an IMDS request it had no token for (resolve, guard, decide, fetch)"},
	{"agent", "podid_agent_upstream_duration_seconds", map[string]string{"result": "ok"}, "agent: of that, the fetch (TokenRequest + the sts's exchange)"},
}

// sample is the sum and count of each phase's series.
type sample map[int][2]float64

// scrape reads both sources' metrics.
func scrape(ctx context.Context, cs kubernetes.Interface, node string) (sample, error) {
	fams := map[string]map[string]*dto.MetricFamily{}
	paths := map[string]string{"apiserver": "/metrics", "kubelet": "/api/v1/nodes/" + node + "/proxy/metrics"}
	// The agent serves /metrics on its health port (chart: agent.healthPort).
	ps, err := cs.CoreV1().Pods("podid-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podid-agent"})
	switch {
	case err != nil:
		log.Printf("no agent metrics: %v", err)
	case len(ps.Items) != 1:
		log.Printf("no agent metrics: %d agent pods", len(ps.Items))
	default:
		paths["agent"] = "/api/v1/namespaces/podid-system/pods/" + ps.Items[0].Name + ":9102/proxy/metrics"
	}
	for src, path := range paths {
		b, err := cs.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx)
		if err != nil {
			if src == "agent" {
				log.Printf("no agent metrics: %v", err) // the breakdown lacks the agent's lines
				continue
			}
			return nil, fmt.Errorf("%s metrics: %w", src, err)
		}
		f, err := parse(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s metrics: %w", src, err)
		}
		fams[src] = f
	}
	s := sample{}
	for i, ph := range phases {
		f := fams[ph.source][ph.metric]
		if f == nil {
			continue
		}
		var sum, n float64
		for _, m := range f.Metric {
			if !matches(m, ph.labels) || m.Histogram == nil {
				continue
			}
			sum += m.Histogram.GetSampleSum()
			n += float64(m.Histogram.GetSampleCount())
		}
		s[i] = [2]float64{sum, n}
	}
	return s, nil
}

func parse(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

func matches(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.Label {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// report prints each phase's mean over the operations between before and
// after, with how many there were per pod.
func report(w io.Writer, before, after sample, pods int) {
	var idx []int
	for i := range after {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		d := [2]float64{after[i][0] - before[i][0], after[i][1] - before[i][1]}
		if d[1] <= 0 {
			continue
		}
		ph := phases[i]
		labels := []string{}
		for k, v := range ph.labels {
			if v != "" {
				labels = append(labels, k+"="+v)
			}
		}
		sort.Strings(labels)
		fmt.Fprintf(w, "    %-60s mean %7.1f ms  (%.1f per pod)   %s{%s}\n", ph.what, 1000*d[0]/d[1], d[1]/float64(pods), ph.metric, strings.Join(labels, ","))
	}
}
