package workloadidentity

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestServiceAccountName(t *testing.T) {
	for _, tt := range []struct{ name, dep, want string }{
		{"", "", "default"}, {"", "old", "old"}, {"new", "old", "new"},
	} {
		p := &corev1.Pod{Spec: corev1.PodSpec{ServiceAccountName: tt.name, DeprecatedServiceAccount: tt.dep}}
		if got := ServiceAccountName(p); got != tt.want {
			t.Errorf("ServiceAccountName(%q, %q) = %q", tt.name, tt.dep, got)
		}
	}
}
