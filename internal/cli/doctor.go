package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/workloadidentity"
)

// Status of one doctor check.
type Status string

// Statuses, printed as ✓ ✗ ! -.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	Warn Status = "warn"
	Skip Status = "skip"
)

// Finding is one link of the chain from a pod to its token.
type Finding struct {
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Report is doctor's answer for one pod.
type Report struct {
	Pod      string    `json:"pod"`
	Model    string    `json:"model"` // workload-identity, pod-identity or none
	Findings []Finding `json:"findings"`
}

// Failed counts failed checks.
func (r *Report) Failed() int {
	n := 0
	for _, f := range r.Findings {
		if f.Status == Fail {
			n++
		}
	}
	return n
}

// DoctorError is a pod with at least one broken link.
type DoctorError struct {
	Pod    string
	Failed int
}

func (e *DoctorError) Error() string {
	return fmt.Sprintf("pod %s: %d check(s) failed", e.Pod, e.Failed)
}

func (r *Report) add(check string, s Status, msg, fix string) {
	r.Findings = append(r.Findings, Finding{Check: check, Status: s, Message: msg, Fix: fix})
}

// Names of podid's own deployment (deploy/).
const (
	systemNamespace   = "podid-system"
	agentAppLabel     = "podid-agent"
	webhookAppLabel   = "podid-webhook"
	webhookConfigName = "podid-webhook"
	agentConfigMap    = "podid-agent-config"
	appNameLabel      = "app.kubernetes.io/name"
)

type doctorOptions struct {
	// allowAuthority are further authorities the exchange may be sent to.
	allowAuthority []string
	namespace      string
	clusterWide    bool
	noExchange     bool
	resource       string
}

func newDoctorCommand(g *globals) *cobra.Command {
	o := &doctorOptions{}
	cmd := &cobra.Command{
		Use:   "doctor pod/NAME",
		Short: "Explain why a pod gets no token: checks every link from the pod to the identity provider",
		Long: `doctor reads the pod, its service account, the pod-identity bindings and
assignments, what the webhook injected and the node agent, looks the
identity's federated credentials up in the cloud, and finally makes the token
exchange the pod would make. It never prints or stores a token.

RBAC it needs: get pods and serviceaccounts in the pod's namespace; list the
aadpodidentity.k8s.io kinds; list pods in podid-system; get
mutatingwebhookconfigurations; create serviceaccounts/token in the pod's
namespace (for the exchange; skipped with a warning when denied, or with
--no-exchange).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, ok := strings.CutPrefix(args[0], "pod/")
			if !ok && strings.Contains(args[0], "/") {
				return fmt.Errorf("%q: want pod/NAME or NAME", args[0])
			}
			if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
				return fmt.Errorf("pod name %q: %s", name, errs[0])
			}
			if o.namespace == "" {
				o.namespace = g.namespace()
			}
			k, err := g.kube()
			if err != nil {
				return err
			}
			rep, err := doctor(cmd.Context(), g, k, o, name)
			if err != nil {
				return err
			}
			if err := printReport(g, cmd.OutOrStdout(), rep); err != nil {
				return err
			}
			if n := rep.Failed(); n > 0 {
				return &DoctorError{Pod: rep.Pod, Failed: n}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", "", "namespace (default: the kubeconfig's)")
	cmd.Flags().BoolVar(&o.clusterWide, "cluster-wide", false, "bindings select pods of every namespace (as the controller's --cluster-wide)")
	cmd.Flags().BoolVar(&o.noExchange, "no-exchange", false, "skip the real token exchange")
	cmd.Flags().StringVar(&o.resource, "resource", armResource, "resource the exchange asks a token for")
	cmd.Flags().StringSliceVar(&o.allowAuthority, "allow-authority", nil, "further authority the pod's AZURE_AUTHORITY_HOST may name (default: the configured one and Entra's clouds)")
	return cmd
}

func printReport(g *globals, w io.Writer, r *Report) error {
	if g.output != "table" {
		return g.print(w, r, table{})
	}
	fmt.Fprintf(w, "pod %s (%s)\n", r.Pod, r.Model)
	fixed := false
	for _, f := range r.Findings {
		mark := map[Status]string{Pass: "✓", Fail: "✗", Warn: "!", Skip: "-"}[f.Status]
		fmt.Fprintf(w, "%s %s\n", mark, f.Message)
		if f.Status == Fail && !fixed && f.Fix != "" {
			for _, l := range strings.Split(f.Fix, "\n") {
				fmt.Fprintf(w, "    fix: %s\n", l)
			}
			fixed = true
		}
	}
	return nil
}

// doctor walks the chain for one pod. Errors are only for what stops the
// walk itself (the pod cannot be read); everything else is a finding.
func doctor(ctx context.Context, g *globals, k *kube, o *doctorOptions, name string) (*Report, error) {
	key := types.NamespacedName{Namespace: o.namespace, Name: name}
	rep := &Report{Pod: key.String(), Model: "none"}
	var pod corev1.Pod
	if err := k.c.Get(ctx, key, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &NotFoundError{What: "pod " + key.String()}
		}
		return nil, fmt.Errorf("get pod %s: %s", key, oneLine(err.Error()))
	}
	cfg, cfgErr := g.config()
	var sa *corev1.ServiceAccount
	saName := workloadidentity.ServiceAccountName(&pod)
	var s corev1.ServiceAccount
	saErr := k.c.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: saName}, &s)
	if saErr == nil {
		sa = &s
	}
	v2 := webhook.Selected(&pod) || (sa != nil && sa.Annotations[workloadidentity.ClientIDAnnotation] != "")
	v1 := pod.Labels[podidv1.PodLabelKey] != ""
	d := &doc{g: g, k: k, o: o, pod: &pod, rep: rep, cfg: cfg, cfgErr: cfgErr}
	switch {
	case v2:
		rep.Model = "workload-identity"
		d.workloadIdentity(ctx, saName, sa, saErr)
	case v1:
		rep.Model = "pod-identity"
		d.podIdentity(ctx, saName)
	default:
		rep.add("pod.identity", Fail, fmt.Sprintf("pod uses no identity: no %s label, no %s=true label, and ServiceAccount %s has no %s annotation",
			podidv1.PodLabelKey, workloadidentity.UseLabel, saName, workloadidentity.ClientIDAnnotation),
			fmt.Sprintf("workload identity: podid serviceaccount create -n %s --name %s --identity <identity>, then add the label %s: \"true\" to the pod template and roll it out",
				pod.Namespace, saName, workloadidentity.UseLabel))
	}
	return rep, nil
}

// doc carries one doctor run.
type doc struct {
	g      *globals
	k      *kube
	o      *doctorOptions
	pod    *corev1.Pod
	rep    *Report
	cfg    *Config
	cfgErr error
}

func (d *doc) workloadIdentity(ctx context.Context, saName string, sa *corev1.ServiceAccount, saErr error) {
	pod, rep := d.pod, d.rep
	saKey := pod.Namespace + "/" + saName
	if saErr != nil {
		if apierrors.IsNotFound(saErr) {
			rep.add("serviceaccount", Fail, "ServiceAccount "+saKey+" does not exist",
				fmt.Sprintf("podid serviceaccount create -n %s --name %s --identity <identity>", pod.Namespace, saName))
		} else {
			rep.add("serviceaccount", Fail, "ServiceAccount "+saKey+" cannot be read: "+oneLine(saErr.Error()), "")
		}
		return
	}
	rep.add("serviceaccount", Pass, "ServiceAccount "+saKey+" exists", "")
	clientID := sa.Annotations[workloadidentity.ClientIDAnnotation]
	switch {
	case clientID == "":
		rep.add("serviceaccount.client-id", Fail, "ServiceAccount "+saKey+" has no "+workloadidentity.ClientIDAnnotation+" annotation",
			fmt.Sprintf("kubectl -n %s annotate serviceaccount %s %s=<client id>   (or podid serviceaccount create -n %s --name %s --identity <identity>)",
				pod.Namespace, saName, workloadidentity.ClientIDAnnotation, pod.Namespace, saName))
	case !guidRE.MatchString(clientID):
		rep.add("serviceaccount.client-id", Fail, fmt.Sprintf("ServiceAccount %s annotation %s=%q is not a GUID", saKey, workloadidentity.ClientIDAnnotation, clientID),
			fmt.Sprintf("kubectl -n %s annotate --overwrite serviceaccount %s %s=<client id>", pod.Namespace, saName, workloadidentity.ClientIDAnnotation))
	default:
		rep.add("serviceaccount.client-id", Pass, "ServiceAccount "+saKey+" names client id "+clientID, "")
	}
	if !webhook.Selected(pod) {
		rep.add("pod.use-label", Fail, fmt.Sprintf("pod has no label %s: \"true\", so the webhook leaves it alone", workloadidentity.UseLabel),
			fmt.Sprintf("add `%s: \"true\"` to the pod template's metadata.labels and roll it out (kubectl rollout restart …); a running pod is not mutated", workloadidentity.UseLabel))
		return
	}
	rep.add("pod.use-label", Pass, "pod has label "+workloadidentity.UseLabel+"=true", "")
	if pod.Annotations[workloadidentity.UseIdentityBindingAnnotation] == "true" {
		rep.Model = "identity-binding"
		d.identityBinding(ctx, saName, clientID)
		return
	}
	inj := injected(pod)
	if len(inj.missing) > 0 {
		fix := fmt.Sprintf("the webhook did not mutate this pod when it was created: check kubectl get mutatingwebhookconfiguration %s and kubectl -n %s get pods -l %s=%s, then recreate the pod",
			webhookConfigName, systemNamespace, appNameLabel, webhookAppLabel)
		if why := d.webhookState(ctx); why != "" {
			fix = why + "; then recreate the pod"
		}
		rep.add("webhook.injected", Fail, "webhook injection missing: "+strings.Join(inj.missing, "; "), fix)
		return
	}
	rep.add("webhook.injected", Pass, fmt.Sprintf("webhook injected %s, %s, %s and a projected token (audience %s, %ds)",
		workloadidentity.EnvClientID, workloadidentity.EnvTenantID, workloadidentity.EnvAuthorityHost, inj.audience, inj.expiration), "")
	if clientID != "" && inj.env[workloadidentity.EnvClientID] != clientID {
		rep.add("webhook.client-id", Fail, fmt.Sprintf("pod was injected %s=%s but the ServiceAccount now names %s", workloadidentity.EnvClientID, inj.env[workloadidentity.EnvClientID], clientID),
			"recreate the pod (kubectl rollout restart … or kubectl delete pod) so it picks up the ServiceAccount's client id")
		return
	}
	tenant, authority := inj.env[workloadidentity.EnvTenantID], inj.env[workloadidentity.EnvAuthorityHost]
	if tenant == "" {
		rep.add("authority", Fail, "no "+workloadidentity.EnvTenantID+" injected: the ServiceAccount has no tenant annotation and the webhook no default",
			fmt.Sprintf("kubectl -n %s annotate serviceaccount %s %s=<tenant id>, then recreate the pod", pod.Namespace, saName, workloadidentity.TenantIDAnnotation))
		return
	}
	authority = d.localCloudAuthority(ctx, authority)
	if !d.trustedAuthority(authority) {
		return
	}
	if !d.authorityReachable(ctx, authority, tenant) {
		return
	}
	if !d.federatedCredential(ctx, inj.env[workloadidentity.EnvClientID], saName) {
		return
	}
	d.exchange(ctx, saName, authority, tenant, inj.env[workloadidentity.EnvClientID])
}

type injection struct {
	env        map[string]string
	audience   string
	expiration int64
	missing    []string
}

// injected reads what the webhook put into the pod: the env vars of every
// container it does not skip, their token mount, and the projected volume.
func injected(pod *corev1.Pod) injection {
	inj := injection{env: map[string]string{}}
	skip := map[string]bool{}
	for _, c := range strings.Split(pod.Annotations[workloadidentity.SkipContainersAnnotation], ";") {
		skip[strings.TrimSpace(c)] = true
	}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if skip[c.Name] {
			continue
		}
		have := map[string]string{}
		for _, e := range c.Env {
			have[e.Name] = e.Value
		}
		for _, n := range []string{workloadidentity.EnvClientID, workloadidentity.EnvTenantID, workloadidentity.EnvFederatedTokenFile, workloadidentity.EnvAuthorityHost} {
			v, ok := have[n]
			if !ok {
				inj.missing = append(inj.missing, fmt.Sprintf("container %s has no %s", c.Name, n))
				continue
			}
			inj.env[n] = v
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			if m.Name == workloadidentity.TokenVolumeName && m.MountPath == workloadidentity.TokenDir {
				mounted = true
			}
		}
		if !mounted {
			inj.missing = append(inj.missing, fmt.Sprintf("container %s does not mount %s at %s", c.Name, workloadidentity.TokenVolumeName, workloadidentity.TokenDir))
		}
	}
	found := false
	for _, v := range pod.Spec.Volumes {
		if v.Name != workloadidentity.TokenVolumeName || v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if t := s.ServiceAccountToken; t != nil {
				found = true
				inj.audience = t.Audience
				if t.ExpirationSeconds != nil {
					inj.expiration = *t.ExpirationSeconds
				}
			}
		}
	}
	if !found {
		inj.missing = append(inj.missing, "no projected service-account token volume "+workloadidentity.TokenVolumeName)
	} else if inj.audience != ExchangeAudience {
		inj.missing = append(inj.missing, fmt.Sprintf("projected token audience is %q, want %s", inj.audience, ExchangeAudience))
	}
	return inj
}

// webhookState says what is wrong with the webhook's installation, or "".
func (d *doc) webhookState(ctx context.Context) string {
	_, err := d.k.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookConfigName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "MutatingWebhookConfiguration " + webhookConfigName + " is not installed: kubectl apply -k deploy/webhook"
	}
	var pods corev1.PodList
	if err := d.k.c.List(ctx, &pods, client.InNamespace(systemNamespace), client.MatchingLabels{appNameLabel: webhookAppLabel}); err != nil {
		return ""
	}
	for _, p := range pods.Items {
		if podReady(&p) {
			return ""
		}
	}
	return fmt.Sprintf("no ready webhook pod in %s: kubectl -n %s describe pods -l %s=%s", systemNamespace, systemNamespace, appNameLabel, webhookAppLabel)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// The local cloud's name table for the cluster DNS (podid's chart with
// localCloud.enabled; docs/local-cloud.md).
const (
	localCloudDNSNamespace = "kube-system"
	localCloudDNSConfigMap = "local-cloud-dns"
)

// localCloudAuthority: a pod of the local cloud names Entra's public
// authority, which only the cluster's DNS maps onto the sts. Doctor runs
// outside the cluster and must not look that name up: when the cluster's
// name table maps the authority's host and the podid config names a local
// authority, doctor checks that one instead. Otherwise authority is
// returned unchanged.
func (d *doc) localCloudAuthority(ctx context.Context, authority string) string {
	if d.cfg == nil || d.cfg.Authority == "" || d.k == nil {
		return authority
	}
	local := strings.TrimRight(d.cfg.Authority, "/")
	if slices.ContainsFunc(entraAuthorities, func(x string) bool { return strings.EqualFold(x, local) }) {
		return authority
	}
	u, err := url.Parse(authority)
	if err != nil || u.Scheme != "https" || (u.Path != "" && u.Path != "/") {
		return authority
	}
	cm, err := d.k.cs.CoreV1().ConfigMaps(localCloudDNSNamespace).Get(ctx, localCloudDNSConfigMap, metav1.GetOptions{})
	if err != nil || !localCloudServes(cm.Data, u.Hostname()) {
		return authority
	}
	d.rep.add("authority.local-cloud", Pass, fmt.Sprintf("the pod's %s %s is the local cloud's: the cluster DNS answers %s (%s/%s), checked at the configured authority %s",
		workloadidentity.EnvAuthorityHost, authority, u.Hostname(), localCloudDNSNamespace, localCloudDNSConfigMap, local), "")
	return local + "/"
}

// localCloudServes reports whether the name table (the ConfigMap's *.conf
// keys, CoreDNS rewrite rules) answers host exactly.
func localCloudServes(data map[string]string, host string) bool {
	want := strings.ToLower(strings.TrimSuffix(host, ".")) + "."
	for k, v := range data {
		if !strings.HasSuffix(k, ".conf") {
			continue
		}
		for _, line := range strings.Split(v, "\n") {
			f := strings.Fields(line)
			// rewrite stop name exact FROM TO
			if len(f) >= 6 && f[0] == "rewrite" && f[2] == "name" && f[3] == "exact" && strings.EqualFold(f[4], want) {
				return true
			}
		}
	}
	return false
}

// entraAuthorities are the authority hosts of Entra ID's clouds.
var entraAuthorities = []string{
	"https://login.microsoftonline.com", "https://login.microsoftonline.us", "https://login.chinacloudapi.cn", "https://login.partner.microsoftonline.cn",
}

// trustedAuthority refuses an authority the pod chose that the user did not
// configure: the pod's author controls its env, and doctor would otherwise
// make requests from the user's machine — and send a token it minted — to
// any URL the pod names.
func (d *doc) trustedAuthority(authority string) bool {
	a := strings.TrimRight(authority, "/")
	ok := slices.ContainsFunc(append(append([]string{}, entraAuthorities...), d.o.allowAuthority...), func(x string) bool {
		return strings.EqualFold(strings.TrimRight(x, "/"), a)
	})
	if d.cfg != nil && strings.EqualFold(strings.TrimRight(d.cfg.Authority, "/"), a) {
		ok = true
	}
	if !ok {
		d.rep.add("authority", Fail, fmt.Sprintf("the pod's %s %q is neither the configured authority nor an Entra cloud: doctor sends nothing there", workloadidentity.EnvAuthorityHost, authority),
			fmt.Sprintf("if the pod should use it, fix the webhook's --authority-host; if you trust it, podid doctor … --allow-authority %s", a))
	}
	return ok
}

// authorityReachable fetches the tenant's discovery document at the
// authority, from here, trusting the config's CA.
func (d *doc) authorityReachable(ctx context.Context, authority, tenant string) bool {
	if err := validIssuer(strings.TrimRight(authority, "/")); err != nil {
		d.rep.add("authority", Fail, fmt.Sprintf("authority %q is not an https URL", authority), "fix the webhook's --authority-host")
		return false
	}
	hc, err := d.httpClient()
	if err != nil {
		d.rep.add("authority", Fail, err.Error(), "fix caFile in the podid config (podid config set-cloud …)")
		return false
	}
	u := strings.TrimRight(authority, "/") + "/" + tenant + "/v2.0/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err == nil {
		var resp *http.Response
		if resp, err = hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
		}
	}
	if err != nil {
		d.rep.add("authority", Fail, fmt.Sprintf("authority %s (tenant %s) is not reachable from here: %s", authority, tenant, oneLine(err.Error())),
			"check the authority runs and that the podid config's caFile is the CA it serves with (podid config view)")
		return false
	}
	d.rep.add("authority", Pass, fmt.Sprintf("authority %s serves tenant %s", authority, tenant), "")
	return true
}

func (d *doc) httpClient() (*http.Client, error) {
	ca := ""
	if d.cfg != nil {
		ca = d.cfg.CAFile
	}
	return httpClient(ca)
}

// federatedCredential looks the identity up in the configured cloud and
// checks one of its credentials trusts this service account's tokens.
func (d *doc) federatedCredential(ctx context.Context, clientID, saName string) bool {
	return d.federatedCredentialFor(ctx, clientID, d.pod.Namespace, saName)
}

// federatedCredentialFor checks that the identity trusts service account
// ns/saName of this cluster.
func (d *doc) federatedCredentialFor(ctx context.Context, clientID, ns, saName string) bool {
	if d.cfgErr != nil {
		d.rep.add("federated-credential", Skip, "federated credential not looked up: "+d.cfgErr.Error(), "")
		return true
	}
	a, err := d.g.connect(scope{}, false)
	if err != nil {
		d.rep.add("federated-credential", Warn, "federated credential not looked up: "+err.Error(), "")
		return true
	}
	issuer, err := d.k.issuer(ctx)
	if err != nil {
		d.rep.add("federated-credential", Fail, err.Error(), "")
		return false
	}
	id, err := a.identityByClientID(ctx, clientID)
	if err != nil {
		var nf *NotFoundError
		if errors.As(err, &nf) {
			d.rep.add("federated-credential", Fail, fmt.Sprintf("no identity with client id %s in subscription %s", clientID, a.sub),
				"podid identity create <name>, and put its client id on the ServiceAccount")
			return false
		}
		// Not being allowed to read the identity says nothing about the
		// pod: the exchange below is the proof either way.
		d.rep.add("federated-credential", Warn, "federated credential not looked up: "+err.Error(), "")
		return true
	}
	a.rg = id.ResourceGroup
	fics, err := a.listFICs(ctx, id.Name)
	if err != nil {
		d.rep.add("federated-credential", Warn, "federated credential not looked up: "+err.Error(), "")
		return true
	}
	sub := Subject(ns, saName)
	var near []string
	for _, f := range fics {
		aud := len(f.Audiences) == 1 && f.Audiences[0] == ExchangeAudience
		if f.Issuer == issuer && f.Subject == sub && aud {
			d.rep.add("federated-credential", Pass, fmt.Sprintf("identity %s trusts %s from %s (credential %s)", id.Name, sub, issuer, f.Name), "")
			return true
		}
		switch {
		case strings.EqualFold(f.Subject, sub) && f.Subject != sub:
			near = append(near, fmt.Sprintf("%s has subject %q (matching is case-sensitive)", f.Name, f.Subject))
		case f.Subject == sub && f.Issuer != issuer:
			near = append(near, fmt.Sprintf("%s has issuer %q, the cluster's is %q", f.Name, f.Issuer, issuer))
		case f.Subject == sub && !aud:
			near = append(near, fmt.Sprintf("%s has audiences %v, want [%s]", f.Name, f.Audiences, ExchangeAudience))
		}
	}
	msg := fmt.Sprintf("identity %s has no federated credential for issuer %s, subject %s, audience %s", id.Name, issuer, sub, ExchangeAudience)
	if len(near) > 0 {
		msg += " (" + strings.Join(near, "; ") + ")"
	}
	d.rep.add("federated-credential", Fail, msg, fmt.Sprintf("podid federated-credential create --identity %s -g %s --service-account %s/%s", id.Name, id.ResourceGroup, ns, saName))
	return false
}
