package stack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/yaml"
)

// The local cloud's fixed names, as a user reads them from Azure: the
// operator's admin application (Owner on ARM, like `az login` as an admin),
// the subscription and resource group the identities live in.
const (
	adminClientID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
	// adminObjectID is the operator's object id in the directory: what seed
	// 003 reads with `az ad signed-in-user show` and grants Key Vault roles to.
	adminObjectID  = "5d2b8a1e-3c4f-4e6a-9b7d-0f1e2a3b4c5d"
	subscriptionID = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
	resourceGroup  = "demo"
	location       = "westeurope"
	podidNamespace = "podid-system"
	release        = "podid"
)

// upImages are the images podid up runs: podid itself, the Secrets Store
// CSI driver (built from the module proxy by hack/install-csi-driver.sh) and
// the demo programs of deploy/examples/up (pause and CoreDNS are
// hack/cluster.sh's).
func upImages() []string {
	return []string{"podid", "csidriver", "wiclient", "miclient", "queueclient"}
}

// session is one run of Up or Down.
type session struct {
	o   Options
	p   *progress
	env map[string]string // hack/cluster.sh env
	k   *kube

	tenant string
	stsURL string
	// The authority pods are given when the local cloud answers Azure's
	// public names (values-local.yaml localCloud), else "".
	podAuthority string
	created      map[string]identity // IdentitySpec.Name → what the sts returned
	ready        []workload
	results      []demoRow
	changed      int // objects the demo manifests changed
	// newIdentities: this run created an identity; demo pods started
	// before it hold tokens of identities that no longer exist.
	newIdentities bool
	identitiesAt  time.Time
	upgraded      bool
}

// Up runs the main job and prints its summary to o.Out.
func Up(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	k8sBin := filepath.Join(o.Cache, "k8s-v"+k8sVersion(o.Root), "bin")
	if err := preflight(readHost(o.Cache, k8sBin), o.Cache); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	p, err := newProgress(o.Err, o.Verbose, o.logDir(), "up")
	if err != nil {
		return err
	}
	defer p.close()
	s := &session{o: o, p: p, created: map[string]identity{}}
	p.say("podid up: the local cluster, podid, identities and demos (log: %s)", p.logPath)
	steps := []struct {
		short, name string
		fn          func(context.Context) error
	}{
		{"install", "install what is missing (hack/install.sh: apt, Kubernetes, helm)", s.script("hack/install.sh")},
		{"cluster", "start the local cluster (hack/cluster.sh up)", s.script("hack/cluster.sh", "up")},
		// Only the images podid and its demos run (deploy/examples/up): the
		// default set also has the e2e suite's, such as the 951 MB azcli.
		{"images", "build and import podid's images (hack/image.sh " + strings.Join(upImages(), " ") + ")", s.script("hack/image.sh", upImages()...)},
		{"chart", "install podid's Helm chart (values-local.yaml)", s.installChart},
		{"rollout", "wait for podid's rollout", s.waitReady},
		{"identities", "identities through podid's CLI and the sts's ARM API", s.setupIdentities},
		{"backends", "demo backends", s.startBackends},
		{"manifests", "apply the seed manifests (deploy/examples/up)", s.applyManifests},
		{"demos", "demo pods get their tokens", s.runDemos},
	}
	for _, st := range steps {
		if err := p.step(ctx, st.short, st.name, st.fn); err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
				err = fmt.Errorf("%w (--timeout %s)", err, o.Timeout)
			}
			undo := ""
			if st.short != "install" {
				undo = "\n  undo: podid down (./hack/up.sh down) removes whatever was started, or fix the cause and run podid up again"
			}
			logLine := "\n  log: " + p.logPath
			var se *ScriptError
			if errors.As(err, &se) {
				logLine = "" // it names the log already
			}
			return fmt.Errorf("%s: %w%s%s", st.name, err, logLine, undo)
		}
	}
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	s.printSummary(o.Out, s.componentsReady(sctx))
	scancel()
	return s.demoErr()
}

// k8sVersion reads the pinned Kubernetes version from hack/versions.sh.
func k8sVersion(root string) string {
	b, _ := os.ReadFile(filepath.Join(root, "hack", "versions.sh"))
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "K8S_VERSION="); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (s *session) script(path string, args ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := s.run(ctx, filepath.Join(s.o.Root, path), args...)
		return err
	}
}

// clusterEnv reads the running cluster's facts (hack/cluster.sh env).
func (s *session) clusterEnv(ctx context.Context) error {
	out, err := s.run(ctx, filepath.Join(s.o.Root, "hack/cluster.sh"), "env")
	if err != nil {
		return err
	}
	s.env = map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			s.env[k] = v
		}
	}
	for _, k := range []string{"KUBECONFIG", "PODID_SA_ISSUER", "PODID_POD_CIDR", "PODID_NODE_IP", "PODID_NODE_NAME", "PODID_KUBELET_DIR"} {
		if s.env[k] == "" {
			return fmt.Errorf("hack/cluster.sh env has no %s", k)
		}
	}
	s.k, err = newKube(s.env["KUBECONFIG"])
	return err
}

// installChart runs helm upgrade --install with values-local.yaml and the
// run's own values (the sts's bootstrap admin, the cluster's issuer, the
// image's id so a rebuilt image rolls the pods). When the release is
// deployed with exactly these inputs already, helm is not run at all: a
// second podid up changes nothing.
func (s *session) installChart(ctx context.Context) error {
	if err := s.clusterEnv(ctx); err != nil {
		return err
	}
	local, err := readLocalValues(filepath.Join(s.o.Root, "deploy/chart/podid/values-local.yaml"))
	if err != nil {
		return err
	}
	s.tenant = local.TenantID
	if s.podAuthority, err = podAuthority(s.o.Root, local); err != nil {
		return err
	}
	secret, err := s.adminSecret()
	if err != nil {
		return err
	}
	s.p.redact(secret)
	imageID, _ := os.ReadFile(filepath.Join(s.o.Cache, "images", "podid", "image.tar.imported"))
	values, err := upValues(s.tenant, secret, s.env["PODID_SA_ISSUER"], s.env["PODID_KUBELET_DIR"], strings.TrimSpace(string(imageID)))
	if err != nil {
		return err
	}
	valuesFile := filepath.Join(s.o.upDir(), "values-up.yaml")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		return err
	}
	// The agent needs the privileged Pod Security level; helm does not
	// create namespaces with labels.
	ns := applycorev1.Namespace(podidNamespace).WithLabels(map[string]string{
		"pod-security.kubernetes.io/enforce": "privileged", "app.kubernetes.io/part-of": "podid"})
	if _, err := s.k.cs.CoreV1().Namespaces().Apply(ctx, ns, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
		return fmt.Errorf("namespace %s: %w", podidNamespace, err)
	}
	chart := filepath.Join(s.o.Root, "deploy/chart/podid")
	fp, err := fingerprint(chart, values)
	if err != nil {
		return err
	}
	fpFile := filepath.Join(s.o.upDir(), "release.sha256")
	if old, _ := os.ReadFile(fpFile); string(old) == fp && s.releaseDeployed(ctx) {
		s.p.setStatus("release podid is deployed with these values; helm not run")
		return nil
	}
	if ip := local.STS.Service.ClusterIP; ip != "" {
		s.p.setStatus("waiting for ClusterIP " + ip + " (the sts Service's) to be free")
		if err := waitClusterIP(ctx, s.k, ip, podidNamespace, "podid-sts", clusterIPWait); err != nil {
			return err
		}
	}
	helm := s.o.helmBin()
	s.p.setStatus("helm upgrade --install podid deploy/chart/podid")
	if _, err := s.run(ctx, helm, "upgrade", "--install", release, chart, "--namespace", podidNamespace,
		"--kubeconfig", s.env["KUBECONFIG"], "-f", filepath.Join(chart, "values-local.yaml"), "-f", valuesFile,
		"--timeout", "5m"); err != nil {
		return err
	}
	s.upgraded = true
	return os.WriteFile(fpFile, []byte(fp), 0o600)
}

// clusterIPWait bounds how long podid up waits for the sts's fixed
// ClusterIP to be released.
const clusterIPWait = time.Minute

// waitClusterIP waits (at most limit) until ip is free or held by the
// Service ns/name itself. The API server releases a deleted Service's
// ClusterIP after the Service is gone (its IPAddress object goes later):
// right after a helm uninstall, an install in that window fails with
// "provided IP is already allocated".
func waitClusterIP(ctx context.Context, k *kube, ip, ns, name string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	holder := "?"
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		a, err := k.cs.NetworkingV1().IPAddresses().Get(ctx, ip, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			holder = err.Error()
			return false, nil // transient: ask again
		}
		p := a.Spec.ParentRef
		if p == nil || p.Resource != "services" {
			holder = "an IPAddress object without a Service"
			return false, nil
		}
		holder = "Service " + p.Namespace + "/" + p.Name
		if p.Namespace != ns || p.Name != name {
			return false, nil
		}
		// Ours — unless that Service is the one just deleted.
		svc, err := k.cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && svc.DeletionTimestamp == nil && svc.Spec.ClusterIP == ip, nil
	})
	if err != nil {
		return fmt.Errorf("ClusterIP %s (values-local.yaml's sts.service.clusterIP) is still held by %s after %s: delete what holds it, or pick another free address in the service range", ip, holder, limit)
	}
	return nil
}

// releaseDeployed: helm list says the release is deployed. (Not helm
// status: its JSON carries the values, and with them the admin secret,
// into the log.)
func (s *session) releaseDeployed(ctx context.Context) bool {
	out, err := s.run(ctx, s.o.helmBin(), "list", "--namespace", podidNamespace, "--kubeconfig", s.env["KUBECONFIG"],
		"--filter", "^"+release+"$", "-o", "json")
	if err != nil {
		return false
	}
	var rs []struct{ Name, Status string }
	if json.Unmarshal(out, &rs) != nil {
		return false
	}
	return len(rs) == 1 && rs[0].Name == release && rs[0].Status == "deployed"
}

type localValues struct {
	TenantID string `json:"tenantID"`
	STS      struct {
		Service struct {
			ClusterIP string `json:"clusterIP"`
		} `json:"service"`
	} `json:"sts"`
	LocalCloud struct {
		Enabled   bool   `json:"enabled"`
		Authority string `json:"authority"`
	} `json:"localCloud"`
}

// podAuthority is the authority the chart gives pods with local's values:
// localCloud.authority (the chart's default when unset) when the local
// cloud is enabled, else "".
func podAuthority(root string, local localValues) (string, error) {
	if !local.LocalCloud.Enabled || local.LocalCloud.Authority != "" {
		return local.LocalCloud.Authority, nil
	}
	var chart localValues
	b, err := os.ReadFile(filepath.Join(root, "deploy/chart/podid/values.yaml"))
	if err == nil {
		err = yaml.Unmarshal(b, &chart)
	}
	if err != nil {
		return "", fmt.Errorf("the chart's values.yaml: %w", err)
	}
	return chart.LocalCloud.Authority, nil
}

func readLocalValues(path string) (localValues, error) {
	var v localValues
	b, err := os.ReadFile(path)
	if err != nil {
		return v, err
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("%s: %w", path, err)
	}
	if v.TenantID == "" {
		return v, fmt.Errorf("%s has no tenantID", path)
	}
	return v, nil
}

// adminSecret is the operator's credential in the sts's bootstrap: made
// once, kept 0600 under $PODID_CACHE/up (the CLI reads it from there).
func (s *session) adminSecret() (string, error) {
	if err := os.MkdirAll(s.o.upDir(), 0o700); err != nil {
		return "", err
	}
	f := filepath.Join(s.o.upDir(), "admin-secret")
	if b, err := os.ReadFile(f); err == nil && len(bytes.TrimSpace(b)) >= 32 {
		return string(bytes.TrimSpace(b)), nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	secret := base64.RawURLEncoding.EncodeToString(b)
	return secret, os.WriteFile(f, []byte(secret), 0o600)
}

// upValues are the run's values on top of values-local.yaml.
func upValues(tenant, secret, issuer, kubeletDir, imageID string) ([]byte, error) {
	ann := map[string]any{}
	if imageID != "" {
		ann["podid.dev/image-id"] = imageID
	}
	comp := map[string]any{"podAnnotations": ann}
	v := map[string]any{
		// Seed 004 keeps identities in aad-broker for pods elsewhere: the
		// legacy cluster-wide matching (namespaced identities stay namespaced).
		"clusterWide": true,
		"controller":  comp, "webhook": comp, "agent": comp,
		// Seed 003's Key Vault mount: the Secrets Store CSI driver and
		// podid's provider, registered with this node's kubelet.
		"csi": map[string]any{"enabled": true, "kubeletRootDir": kubeletDir, "provider": comp},
		"sts": map[string]any{
			"podAnnotations": ann,
			"saIssuer":       issuer,
			"bootstrap": map[string]any{"tenants": []any{map[string]any{
				"id": tenant, "domains": []string{"podid.local"},
				"applications": []any{map[string]any{
					"clientId": adminClientID, "objectId": adminObjectID, "displayName": "podid-up-admin",
					"secrets": []any{map[string]any{"value": secret}},
				}},
				"roleAssignments": []any{map[string]any{
					"principal": adminClientID, "resource": "https://management.azure.com", "role": "Owner"}},
			}}},
		},
	}
	return yaml.Marshal(v)
}

// fingerprint is a digest of the chart's files and the values.
func fingerprint(chart string, values []byte) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(chart, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", p, len(b))
		h.Write(b)
		return nil
	})
	h.Write(values)
	return hex.EncodeToString(h.Sum(nil)), err
}

func (s *session) waitReady(ctx context.Context) error {
	ws, err := s.k.waitRollouts(ctx, podidNamespace, 5*time.Minute, s.p.setStatus)
	s.ready = ws
	return err
}

// applyManifests applies the sts's CA for the demo pods
// and every demo's manifests (each file once).
func (s *session) applyManifests(ctx context.Context) error {
	dir := filepath.Join(s.o.Root, "deploy/examples/up")
	vars := s.vars()
	// Workload pods trust the sts through its CA, as the chart publishes it.
	ca, err := s.k.cs.CoreV1().ConfigMaps(podidNamespace).Get(ctx, "podid-sts-ca", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the sts's CA: %w", err)
	}
	cm := applycorev1.ConfigMap("podid-sts-ca", "demo").WithData(map[string]string{"ca.pem": ca.Data["ca.pem"]})
	if _, err := s.k.cs.CoreV1().ConfigMaps("demo").Apply(ctx, cm, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
		return err
	}
	seen := map[Manifest]bool{}
	for _, d := range Demos {
		for _, m := range d.Manifests {
			if seen[m] {
				continue
			}
			seen[m] = true
			s.p.setStatus("applying " + m.File)
			n, err := s.k.applyFile(ctx, filepath.Join(dir, m.File), m.Namespace, vars)
			if err != nil {
				return err
			}
			s.changed += n
		}
	}
	if s.newIdentities {
		if err := s.restartStale(ctx, dir, vars); err != nil {
			return err
		}
	}
	s.p.setStatus(fmt.Sprintf("%d objects changed", s.changed))
	return nil
}

// restartStale restarts the demo pods created before this run's identities
// (their tokens are for identities the sts no longer has, e.g. after its
// pod was replaced): a controller's pod is deleted and its controller makes
// a new one from the same template; a bare pod is deleted and its manifests
// applied again.
func (s *session) restartStale(ctx context.Context, dir string, vars map[string]string) error {
	for _, d := range Demos {
		pods, err := s.k.cs.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: d.Selector})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || !p.CreationTimestamp.Time.Before(s.identitiesAt) {
				continue
			}
			s.p.line(fmt.Sprintf("restarting %s/%s: its token predates the identities this run created", p.Namespace, p.Name))
			grace := int64(0)
			if err := s.k.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			if metav1.GetControllerOf(&p) != nil {
				continue
			}
			err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				_, err := s.k.cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			if err != nil {
				return fmt.Errorf("pod %s/%s was not deleted: %w", p.Namespace, p.Name, err)
			}
			for _, m := range d.Manifests {
				if _, err := s.k.applyFile(ctx, filepath.Join(dir, m.File), m.Namespace, vars); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// startBackends applies each backend and waits for its rollout.
func (s *session) startBackends(ctx context.Context) error {
	dir := filepath.Join(s.o.Root, "deploy/examples/up")
	if _, err := s.k.applyFile(ctx, filepath.Join(dir, namespacesFile), "", s.vars()); err != nil {
		return err
	}
	for _, b := range Backends {
		for _, m := range b.Manifests {
			s.p.setStatus(b.Name + ": applying " + m.File)
			if _, err := s.k.applyFile(ctx, filepath.Join(dir, m.File), m.Namespace, s.vars()); err != nil {
				return fmt.Errorf("%s: %w", b.Name, err)
			}
		}
		if _, err := s.k.waitRollouts(ctx, b.Namespace, 3*time.Minute, func(st string) { s.p.setStatus(b.Name + ": " + st) }); err != nil {
			return fmt.Errorf("%s: %w", b.Name, err)
		}
	}
	if len(Backends) == 0 {
		s.p.setStatus("none yet")
	}
	return nil
}

// vars are the values a user fills into the seed manifests.
func (s *session) vars() map[string]string {
	v := map[string]string{"TENANT_ID": s.tenant, "SUBSCRIPTION_ID": subscriptionID, "RESOURCE_GROUP": resourceGroup, "KEYVAULT_NAME": demoVault}
	for name, id := range s.created {
		key := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		v[key+"_CLIENT_ID"] = id.ClientID
		v[key+"_RESOURCE_ID"] = id.ID
	}
	return v
}

// componentsReady is "name ready/total" per podid component, from the pods.
func (s *session) componentsReady(ctx context.Context) []string {
	pods, err := s.k.cs.CoreV1().Pods(podidNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return []string{"(cannot list pods: " + err.Error() + ")"}
	}
	type count struct{ ready, all int }
	by := map[string]*count{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		n := strings.TrimPrefix(p.Labels["app.kubernetes.io/name"], "podid-")
		if by[n] == nil {
			by[n] = &count{}
		}
		by[n].all++
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				by[n].ready++
			}
		}
	}
	var out []string
	for n, c := range by {
		mark := "ready"
		if c.ready < c.all {
			mark = "NOT READY"
		}
		out = append(out, fmt.Sprintf("%s %d/%d %s", n, c.ready, c.all, mark))
	}
	sort.Strings(out)
	return out
}
