package testenv

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// The scripts and the Go harness must agree on the pinned version, or tests
// would look for binaries the scripts never build.
func TestVersionMatchesScripts(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "hack", "versions.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^K8S_VERSION=(\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("hack/versions.sh has no K8S_VERSION= line")
	}
	if got := string(m[1]); got != K8sVersion {
		t.Fatalf("hack/versions.sh pins %s, testenv.K8sVersion is %s", got, K8sVersion)
	}
}
