package v1

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestLabelValueAcceptsYAMLScalars(t *testing.T) {
	for _, tt := range []struct {
		yaml, want string
		bad        bool
	}{
		{yaml: "PodLabels: {noaad: true}", want: "true"},
		{yaml: "PodLabels: {noaad: false}", want: "false"},
		{yaml: `PodLabels: {noaad: "yes"}`, want: "yes"},
		{yaml: "PodLabels: {noaad: 42}", want: "42"},
		{yaml: "PodLabels: {noaad: [1]}", bad: true},
		{yaml: "PodLabels: {noaad: {a: b}}", bad: true},
		{yaml: "PodLabels: {noaad: null}", bad: true},
	} {
		var s AzurePodIdentityExceptionSpec
		err := yaml.Unmarshal([]byte(tt.yaml), &s)
		if tt.bad {
			if err == nil {
				t.Errorf("%s: accepted", tt.yaml)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.yaml, err)
			continue
		}
		if got := s.Normalized()["noaad"]; got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.yaml, got, tt.want)
		}
	}
}

func TestNormalizedPrefersCanonicalAndClearsLegacy(t *testing.T) {
	var s AzureIdentitySpec
	if err := json.Unmarshal([]byte(`{"type":0,"ResourceID":"/r","ClientID":"legacy","clientID":"canon","ClientPassword":{"name":"p"},"TenantID":"t"}`), &s); err != nil {
		t.Fatal(err)
	}
	n := s.Normalized()
	want := AzureIdentitySpec{ResourceID: "/r", ClientID: "canon", TenantID: "t", ClientPassword: corev1.SecretReference{Name: "p"}, AuxiliaryTenantIDs: []string{}}
	if n.ResourceID != want.ResourceID || n.ClientID != want.ClientID || n.TenantID != want.TenantID || n.ClientPassword != want.ClientPassword {
		t.Fatalf("Normalized() = %+v", n)
	}
	if n.LegacyClientID != "" || n.LegacyResourceID != "" || n.LegacyTenantID != "" || n.LegacyClientPassword != nil {
		t.Fatalf("legacy fields left: %+v", n)
	}
	b := AzureIdentityBindingSpec{LegacyAzureIdentity: "id", LegacySelector: "sel"}.Normalized()
	if b.AzureIdentity != "id" || b.Selector != "sel" || b.LegacySelector != "" {
		t.Fatalf("binding Normalized() = %+v", b)
	}
}
