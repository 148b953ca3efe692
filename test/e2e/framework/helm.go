package framework

import (
	"os"
	"path/filepath"
	"testing"
)

// Helm finds the pinned helm (hack/install-helm.sh): $HELM, else
// $PODID_CACHE/bin/helm, else the repo's .cache/bin/helm. Without it the
// test skips, unless RequireEnv is "1" (hack/test.sh), where a missing tool
// is a failure.
func Helm(t testing.TB) string {
	t.Helper()
	p := os.Getenv("HELM")
	if p == "" {
		cache := os.Getenv("PODID_CACHE")
		if cache == "" {
			cache = filepath.Join(RepoRoot(), ".cache")
		}
		p = filepath.Join(cache, "bin", "helm")
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("helm not found at %s (hack/install-helm.sh builds it): %v", p, err)
		}
		t.Skipf("helm not found at %s; run hack/install-helm.sh", p)
	}
	return p
}
