// Command firsttoken measures, on the running `podid up` cluster, the time
// from applying a new bound pod to its first token: N pods one after the
// other (each pod alone, so the figure is podid's path and the node's pod
// start, not a queue), for a v1 pod (aadpodidbinding → IMDS → agent) and a
// v2 pod (workload identity → federated token → sts). For each pod it
// reports
//
//	apply→token   client's Create call → the demo program's first token
//	create        the Create call (admission, podid's webhook among it)
//	→scheduled    Create returned → the pod bound to the node (a watch)
//	→asked        bound → the program's first GetToken: the kubelet's part
//	              (pod worker, volumes, sandbox and CNI, container create
//	              and start) and the program's start
//	ask→token     the program's first GetToken → its token (podid's part:
//	              the agent / webhook-injected env and the sts, with the
//	              SDK's retries)
//
// as p50/p99/max; then where the kubelet's part goes, from the kubelet's and
// the API server's own histograms over the same run (the mean per operation:
// sum and count before and after). The pods are the demos' images and
// deleted afterwards.
//
//	go run ./bench/firsttoken -n 20 -kind v1,v2
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podid/podid/internal/demoresult"
)

func main() {
	n := flag.Int("n", 20, "pods per kind")
	kinds := flag.String("kind", "v1,v2", "which paths: v1 (pod identity, IMDS) and/or v2 (workload identity)")
	ns := flag.String("namespace", "demo", "namespace podid up's demos run in")
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "the podid up cluster's kubeconfig")
	timeout := flag.Duration("pod-timeout", 60*time.Second, "give up on a pod after this long")
	flag.Parse()
	if *n < 1 || *n > 200 {
		log.Fatal("-n must be between 1 and 200")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig (run podid up, then export KUBECONFIG): %v", err)
	}
	// client-go's default rate limit (5 requests/s) would make the bench's
	// own log polling delay the next pod's Create by ~200 ms and count it.
	cfg.QPS, cfg.Burst = 200, 400
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		log.Fatalf("want the one node of podid up's cluster: %v", err)
	}
	node := nodes.Items[0].Name
	for _, kind := range strings.Split(*kinds, ",") {
		if kind != "v1" && kind != "v2" {
			log.Fatalf("-kind %q: want v1 or v2", kind)
		}
		before, err := scrape(ctx, cs, node)
		if err != nil {
			log.Fatal(err)
		}
		var ts timings
		for i := range *n {
			p := pod(kind, *ns, i)
			t, err := measure(ctx, cs, p, *timeout)
			if err != nil {
				log.Fatalf("%s pod %d: %v", kind, i, err)
			}
			ts.add(t)
		}
		after, err := scrape(ctx, cs, node)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s  %d pods  apply→token %s   ask→token %s\n", kind, *n, stats(ts.applyTo), stats(ts.askTo))
		fmt.Printf("  per pod:  create %s | →scheduled %s | →asked %s | ask→token %s\n", stats(ts.create), stats(ts.sched), stats(ts.start), stats(ts.askTo))
		fmt.Printf("  the same pods from the kubelet's and API server's histograms:\n")
		report(os.Stdout, before, after, *n)
	}
}

// timing is one pod's timeline, each phase from the end of the previous.
type timing struct{ applyTo, create, sched, start, askTo time.Duration }

type timings struct{ applyTo, create, sched, start, askTo []time.Duration }

func (ts *timings) add(t timing) {
	ts.applyTo, ts.create, ts.sched = append(ts.applyTo, t.applyTo), append(ts.create, t.create), append(ts.sched, t.sched)
	ts.start, ts.askTo = append(ts.start, t.start), append(ts.askTo, t.askTo)
}

// measure creates p, watches it until it is bound, waits for its result
// line and deletes it.
func measure(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, timeout time.Duration) (timing, error) {
	var t timing
	pods := cs.CoreV1().Pods(p.Namespace)
	zero := int64(0)
	defer func() { _ = pods.Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}) }()
	_ = pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	for { // a previous run's pod of the same name must be gone
		if _, err := pods.Get(ctx, p.Name, metav1.GetOptions{}); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + p.Name})
	if err != nil {
		return t, err
	}
	bound := make(chan time.Time, 1)
	done := make(chan struct{})
	go func() { // owned by measure: w.Stop ends it
		defer close(done)
		for ev := range w.ResultChan() {
			if q, ok := ev.Object.(*corev1.Pod); ok && q.Spec.NodeName != "" {
				bound <- time.Now()
				return
			}
		}
	}()
	defer func() { w.Stop(); <-done }()
	applied := time.Now()
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return t, err
	}
	created := time.Now()
	var scheduled time.Time
	select {
	case scheduled = <-bound:
	case <-ctx.Done():
		return t, fmt.Errorf("not bound to the node within %s", timeout)
	}
	for ctx.Err() == nil {
		b, err := pods.GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err == nil {
			r, err := demoresult.Find(b)
			if err == nil {
				t = timing{applyTo: r.TokenAt.Sub(applied), create: created.Sub(applied), sched: scheduled.Sub(created),
					start: r.AskedAt.Sub(scheduled), askTo: r.TokenAt.Sub(r.AskedAt)}
				return t, nil
			}
			if !errors.Is(err, demoresult.ErrNoResult) {
				return t, err
			}
		}
		time.Sleep(50 * time.Millisecond) // polling the log: the measured pod does not wait on this
	}
	return t, fmt.Errorf("no token within %s", timeout)
}

func pod(kind, ns string, i int) *corev1.Pod {
	grace := int64(0)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("firsttoken-%s-%d", kind, i), Namespace: ns, Labels: map[string]string{"podid.dev/bench": "firsttoken"}},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{{
			Name: "app", ImagePullPolicy: corev1.PullNever,
		}}},
	}
	c := &p.Spec.Containers[0]
	switch kind {
	case "v1": // seed 001's binding (podid up's demo)
		p.Labels["aadpodidbinding"] = "myapp"
		c.Image, c.Args = "localhost/podid-miclient:dev", []string{"-scope", "https://storage.azure.com/.default"}
	case "v2": // seed 003's ServiceAccount
		p.Labels["azure.workload.identity/use"] = "true"
		p.Spec.ServiceAccountName = "sademo"
		c.Image, c.Args = "localhost/podid-wiclient:dev", []string{"-scope", "https://vault.azure.net/.default"}
		c.Env = []corev1.EnvVar{{Name: "SSL_CERT_FILE", Value: "/etc/podid-sts-ca/ca.pem"}}
		c.VolumeMounts = []corev1.VolumeMount{{Name: "sts-ca", MountPath: "/etc/podid-sts-ca", ReadOnly: true}}
		p.Spec.Volumes = []corev1.Volume{{Name: "sts-ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "podid-sts-ca"}}}}}
	}
	return p
}

func stats(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(f*float64(len(s))))] }
	return fmt.Sprintf("p50 %s p99 %s max %s", q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}
