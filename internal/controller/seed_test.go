package controller_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/controller"
)

const (
	seedClientID = "22222222-2222-2222-2222-222222222222"
	seedSub      = "33333333-3333-3333-3333-333333333333"
)

// placeholders are the values the articles tell the reader to fill in; the
// tests fill them in the same way and change nothing else.
var placeholders = map[string]string{
	"<client ID of the user-assigned identity>":           seedClientID,
	"<your_managed_identity_name>":                        "myidentity",
	"<the managed identity id returned previously>":       "/subscriptions/" + seedSub + "/resourcegroups/myresourcegroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/myidentity",
	"<the managed identity clientId returned previously>": seedClientID,
	"<your_managed_identity_name from the previous step>": "myidentity",
	"<your_app_selector_name>":                            "myapp",
	"<a-idname>":                                          "a-idname",
	"<subid>":                                             seedSub,
	"<resourcegroup>":                                     "myresourcegroup",
	"<name>":                                              "myidentity",
	"<clientId>":                                          seedClientID,
	"<label value to match>":                              "sqlapp",
}

var placeholder = regexp.MustCompile(`<[^<>]+>`)

// seedManifest returns testdata/seeds/<n>.yaml with placeholders filled in.
func seedManifest(t *testing.T, n string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "seeds", n+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var unknown []string
	out := placeholder.ReplaceAllStringFunc(string(b), func(p string) string {
		v, ok := placeholders[p]
		if !ok {
			unknown = append(unknown, p)
		}
		return v
	})
	if len(unknown) > 0 {
		t.Fatalf("seed %s has placeholders the test does not know: %v", n, unknown)
	}
	f := filepath.Join(t.TempDir(), n+".yaml")
	if err := os.WriteFile(f, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// seedDirEnv names a directory holding the text of the guides the testdata
// come from (NNN_*.txt, docs/contracts.md §7). The guides are not part of the
// repository, so the check runs only where they are provided.
const seedDirEnv = "PODID_SEED_DIR"

// The testdata must be the seeds' own text: every line of it appears, in
// order, in the seed article (ignoring indentation, which seed 000's page lost).
func TestSeedTestdataComesFromSeeds(t *testing.T) {
	dir := os.Getenv(seedDirEnv)
	if dir == "" {
		t.Skipf("%s not set: no seed articles to compare the testdata with", seedDirEnv)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("%s: %v", seedDirEnv, err)
	}
	for _, n := range []string{"000", "001", "004"} {
		t.Run(n, func(t *testing.T) {
			matches, _ := filepath.Glob(filepath.Join(dir, n+"_*.txt"))
			if len(matches) != 1 {
				t.Fatalf("want one seed file %s_*.txt, got %v", n, matches)
			}
			seed, err := os.ReadFile(matches[0])
			if err != nil {
				t.Fatal(err)
			}
			var seedLines []string
			for _, l := range strings.Split(string(seed), "\n") {
				seedLines = append(seedLines, strings.TrimSpace(l))
			}
			data, err := os.ReadFile(filepath.Join("testdata", "seeds", n+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			i := 0
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				l := strings.TrimSpace(sc.Text())
				if l == "" || l == "---" || strings.HasPrefix(l, "#") {
					continue
				}
				for i < len(seedLines) && seedLines[i] != l {
					i++
				}
				if i == len(seedLines) {
					t.Fatalf("line %q of testdata/seeds/%s.yaml is not in the seed (in order)", l, n)
				}
				i++
			}
		})
	}
}

func kubectlApply(t *testing.T, ns, file string) {
	t.Helper()
	admin, err := env.Env.ControlPlane.AddUser(envtest.User{Name: "seed-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatalf("add kubectl user: %v", err)
	}
	k, err := admin.Kubectl()
	if err != nil {
		t.Fatalf("kubectl for seed-admin: %v", err)
	}
	stdout, stderr, err := k.Run("apply", "-n", ns, "-f", file)
	if err != nil {
		o, _ := io.ReadAll(stdout)
		e, _ := io.ReadAll(stderr)
		t.Fatalf("kubectl apply -f %s: %v\n%s%s", filepath.Base(file), err, o, e)
	}
}

func TestSeedManifestsApplyUnchanged(t *testing.T) {
	e := env.Need(t)
	ctx := t.Context()

	t.Run("000-namespaced-identity-canonical-keys", func(t *testing.T) {
		ns := e.Namespace(t)
		kubectlApply(t, ns, seedManifest(t, "000"))
		startController(t, controller.Options{})
		create(t, pod(ns, "busandstoragemessagehandlers-1", "node-a", map[string]string{"app": "busandstoragemessagehandlers", podidv1.PodLabelKey: "storageandbushandler"}))
		name := controller.AssignmentName(ns, "busandstoragemessagehandlers-1", ns, "storageandbushandler")
		got := waitAssigned(t, ns, name)[name]
		if got.Spec.AzureIdentityRef.Spec.ClientID != seedClientID || got.Spec.AzureBindingRef.Name != "storageandbushandler-binding" {
			t.Fatalf("assignment: %+v", got.Spec)
		}
	})

	t.Run("001-legacy-keys-boolean-exception-label", func(t *testing.T) {
		ns := e.Namespace(t)
		kubectlApply(t, ns, seedManifest(t, "001"))
		var id podidv1.AzureIdentity
		if err := e.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "myidentity"}, &id); err != nil {
			t.Fatal(err)
		}
		if id.Spec.LegacyClientID != seedClientID || id.Spec.LegacyResourceID == "" {
			t.Fatalf("legacy keys were not stored: %+v", id.Spec)
		}
		if s := id.Spec.Normalized(); s.ClientID != seedClientID || binding.Validate(s) != nil {
			t.Fatalf("normalised spec %+v invalid: %v", s, binding.Validate(s))
		}
		var ex podidv1.AzurePodIdentityException
		if err := e.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "aad-identity-exception"}, &ex); err != nil {
			t.Fatal(err)
		}
		if got := ex.Spec.Normalized(); got["noaad"] != "true" {
			t.Fatalf("exception labels %v, want noaad=true", got)
		}

		startController(t, controller.Options{})
		create(t,
			pod(ns, "myapp", "node-a", map[string]string{podidv1.PodLabelKey: "myapp"}),
			pod(ns, "skipped", "node-a", map[string]string{podidv1.PodLabelKey: "myapp", "noaad": "true"}),
		)
		name := controller.AssignmentName(ns, "myapp", ns, "myidentity")
		got := waitAssigned(t, ns, name)[name]
		if got.Spec.AzureIdentityRef.Spec.ClientID != seedClientID || got.Spec.AzureBindingRef.Spec.Selector != "myapp" {
			t.Fatalf("legacy identity/binding not honoured: %+v", got.Spec)
		}
		waitEvent(t, ns, "skipped", "IdentityExcepted", "aad-identity-exception")
	})

	t.Run("004-identities-in-a-broker-namespace", func(t *testing.T) {
		broker, apps := e.Namespace(t), e.Namespace(t)
		kubectlApply(t, broker, seedManifest(t, "004"))
		create(t, pod(apps, "sqlclient", "node-a", map[string]string{podidv1.PodLabelKey: "sqlapp"}))
		// Namespaced by default: the article's cross-namespace layout needs
		// --cluster-wide, which is exactly what its author relied on.
		r := startController(t, controller.Options{})
		create(t, pod(broker, "inbroker", "node-a", map[string]string{podidv1.PodLabelKey: "sqlapp"}))
		waitAssigned(t, broker, controller.AssignmentName(broker, "inbroker", broker, "a-idname"))
		if got := assignments(ctx, t, apps); len(got) != 0 {
			t.Fatalf("namespaced mode crossed namespaces: %v", got)
		}
		r.stop()
		startController(t, controller.Options{Rules: binding.Rules{ClusterWide: true}})
		waitAssigned(t, apps, controller.AssignmentName(apps, "sqlclient", broker, "a-idname"))
	})
}
