package csiprovider

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"
)

// seed003Objects is the objects parameter of seed 003's SecretProviderClass,
// byte for byte (YAML block scalars as kubectl apply stores them).
const seed003Objects = "array:\n  - |\n    objectName: \"demosecret\"\n    objectType: secret\n"

func baseAttrs() map[string]string {
	return map[string]string{
		"usePodIdentity": "false", "useVMManagedIdentity": "true",
		"userAssignedIdentityID": "11111111-2222-3333-4444-555555555555",
		"keyvaultName":           "kv12345", "objects": seed003Objects,
		"tenantId":  "72f988bf-86f1-41af-91ab-2d7cd011db47",
		AttrPodName: "secretpods-abc", AttrPodNamespace: "default", AttrPodUID: "uid-1",
		AttrServiceAccount:             "default",
		"secretProviderClass":          "demo-secret",
		"csi.storage.k8s.io/ephemeral": "true",
		AttrServiceAccounts:            `{"api://AzureADTokenExchange":{"token":"tok-a","expirationTimestamp":"2026-12-07T19:00:00Z"}}`,
	}
}

func with(kv ...string) map[string]string {
	a := baseAttrs()
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<delete>" {
			delete(a, kv[i])
			continue
		}
		a[kv[i]] = kv[i+1]
	}
	return a
}

func TestParseSeed003(t *testing.T) {
	m, err := Parse(baseAttrs(), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode != ModeVMManagedIdentity || m.IdentityClientID != "11111111-2222-3333-4444-555555555555" {
		t.Errorf("mode %v id %q", m.Mode, m.IdentityClientID)
	}
	if m.VaultName != "kv12345" || m.TenantID != "72f988bf-86f1-41af-91ab-2d7cd011db47" || m.SAToken != "tok-a" {
		t.Errorf("mount %+v", m)
	}
	if m.Pod != (Pod{Namespace: "default", Name: "secretpods-abc", UID: "uid-1", ServiceAccount: "default"}) {
		t.Errorf("pod %+v", m.Pod)
	}
	if len(m.Objects) != 1 {
		t.Fatalf("objects %+v", m.Objects)
	}
	o := m.Objects[0]
	if o.Name != "demosecret" || o.Type != TypeSecret || o.FileName() != "demosecret" || o.ID() != "secret/demosecret" || o.mode != 0o644 || !o.latest() {
		t.Errorf("object %+v", o)
	}
}

func TestParseModes(t *testing.T) {
	for _, tt := range []struct {
		name  string
		attrs map[string]string
		mode  Mode
		id    string
		param string // ParamError expected on this parameter
	}{
		{"clientID", with("useVMManagedIdentity", "<delete>", "clientID", "cid"), ModeWorkloadIdentity, "cid", ""},
		{"clientID and usePodIdentity false", with("useVMManagedIdentity", "false", "clientID", " cid "), ModeWorkloadIdentity, "cid", ""},
		{"pod identity", with("useVMManagedIdentity", "false", "usePodIdentity", "true"), ModePodIdentity, "", ""},
		{"vm identity", baseAttrs(), ModeVMManagedIdentity, "11111111-2222-3333-4444-555555555555", ""},
		{"two modes", with("usePodIdentity", "true"), 0, "", ParamUsePodIdentity},
		{"bad bool", with("useVMManagedIdentity", "yes please"), 0, "", ParamUseVMManagedIdentity},
		{"vm without id", with("userAssignedIdentityID", ""), 0, "", ParamUserAssignedIdentityID},
		{"no identity at all", with("useVMManagedIdentity", "false"), 0, "", ParamClientID},
		{"tenantID wins", with("tenantID", "t-new"), ModeVMManagedIdentity, "11111111-2222-3333-4444-555555555555", ""},
		{"no tenant", with("tenantId", "<delete>"), 0, "", ParamTenantID},
		{"no vault", with("keyvaultName", " "), 0, "", ParamKeyVaultName},
		{"vault name too short", with("keyvaultName", "kv"), 0, "", ParamKeyVaultName},
		{"vault name with a dot", with("keyvaultName", "kv.evil.example"), 0, "", ParamKeyVaultName},
		{"no pod info", with(AttrPodName, "<delete>"), 0, "", AttrPodName},
		{"malformed token attribute", with(AttrServiceAccounts, "{not json"), 0, "", AttrServiceAccounts},
		{"no objects", with("objects", "<delete>"), 0, "", ParamObjects},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.attrs, 0o644)
			if tt.param != "" {
				var pe *ParamError
				if !errors.As(err, &pe) || pe.Param != tt.param {
					t.Fatalf("want a ParamError on %s, got %v", tt.param, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Mode != tt.mode || m.IdentityClientID != tt.id {
				t.Errorf("mode %v id %q, want %v %q", m.Mode, m.IdentityClientID, tt.mode, tt.id)
			}
		})
	}
}

func TestParseObjects(t *testing.T) {
	item := func(lines ...string) string {
		return "    " + strings.Join(lines, "\n    ") + "\n"
	}
	arr := func(items ...string) string {
		s := "array:\n"
		for _, it := range items {
			s += "  - |\n" + it
		}
		return s
	}
	for _, tt := range []struct {
		name    string
		objects string
		check   func(t *testing.T, o []Object)
		errHas  string
	}{
		{"alias, version, permission, encoding", arr(item("objectName: db-pass", "objectType: secret", "objectAlias: conf/db", "objectVersion: 0123456789abcdef0123456789abcdef", "filePermission: \"0440\"", "objectEncoding: base64")),
			func(t *testing.T, o []Object) {
				if o[0].FileName() != "conf/db" || o[0].mode != 0o440 || o[0].latest() || o[0].Encoding != "base64" {
					t.Errorf("%+v", o[0])
				}
			}, ""},
		{"latest is latest", arr(item("objectName: a", "objectType: SECRET", "objectVersion: latest")),
			func(t *testing.T, o []Object) {
				if !o[0].latest() || o[0].Type != TypeSecret {
					t.Errorf("%+v", o[0])
				}
			}, ""},
		{"numeric name is a string", arr(item("objectName: 1234", "objectType: secret")),
			func(t *testing.T, o []Object) {
				if o[0].Name != "1234" {
					t.Errorf("%+v", o[0])
				}
			}, ""},
		{"history", arr(item("objectName: a", "objectType: secret", "objectVersionHistory: 3")),
			func(t *testing.T, o []Object) {
				if o[0].VersionHistory != 3 {
					t.Errorf("%+v", o[0])
				}
			}, ""},
		{"ten objects", arr(item("objectName: s0", "objectType: secret"), item("objectName: s1", "objectType: secret"), item("objectName: s2", "objectType: secret"),
			item("objectName: s3", "objectType: secret"), item("objectName: s4", "objectType: secret"), item("objectName: s5", "objectType: secret"),
			item("objectName: s6", "objectType: secret"), item("objectName: s7", "objectType: secret"), item("objectName: s8", "objectType: secret"),
			item("objectName: s9", "objectType: secret")),
			func(t *testing.T, o []Object) {
				if len(o) != 10 || o[9].Name != "s9" {
					t.Errorf("%+v", o)
				}
			}, ""},
		{"not yaml", "array: [unclosed", nil, "not YAML"},
		{"array of maps, not strings", "array:\n  - objectName: a\n    objectType: secret\n", nil, "not YAML"},
		{"no array key", "objects:\n  - |\n    objectName: a\n", nil, "not YAML"},
		{"empty array", "array: []\n", nil, "names no object"},
		{"misspelt key", arr(item("objectname: a", "objectType: secret")), nil, "field objectname not found"},
		{"no name", arr(item("objectType: secret")), nil, "objectName is not set"},
		{"no type", arr(item("objectName: a")), nil, "objectType is not set"},
		{"unknown type", arr(item("objectName: a", "objectType: password")), nil, `objectType "password"`},
		{"unknown type", arr(item("objectName: a", "objectType: certificate")), nil, `objectType "certificate" is not secret, key or cert`},
		{"path in name", arr(item("objectName: ../etc", "objectType: secret")), nil, "not a Key Vault object name"},
		{"alias escapes", arr(item("objectName: a", "objectType: secret", "objectAlias: ../../etc/passwd")), nil, "must not contain '..'"},
		{"alias absolute", arr(item("objectName: a", "objectType: secret", "objectAlias: /etc/passwd")), nil, "relative path"},
		{"bad permission", arr(item("objectName: a", "objectType: secret", "filePermission: \"0999\"")), nil, "not an octal file mode"},
		{"bad version", arr(item("objectName: a", "objectType: secret", "objectVersion: ../x")), nil, "objectVersion"},
		{"bad encoding", arr(item("objectName: a", "objectType: secret", "objectEncoding: rot13")), nil, "objectEncoding"},
		{"bad format", arr(item("objectName: a", "objectType: secret", "objectFormat: jks")), nil, "objectFormat"},
		{"history too long", arr(item("objectName: a", "objectType: secret", "objectVersionHistory: 1000")), nil, "objectVersionHistory"},
		{"two files one name", arr(item("objectName: a", "objectType: secret"), item("objectName: b", "objectType: secret", "objectAlias: a")), nil, "both write file"},
		{"two documents", "array: []\n---\narray: []\n", nil, "more than one YAML document"},
		{"too big", "array:\n" + strings.Repeat("#", maxObjectsBytes), nil, "more than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseObjects(tt.objects, 0o644)
			if tt.errHas != "" {
				var pe *ParamError
				if !errors.As(err, &pe) || pe.Param != ParamObjects || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("want a ParamError on objects containing %q, got %v", tt.errHas, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

func TestParseRequest(t *testing.T) {
	attrs, _ := json.Marshal(baseAttrs())
	for _, tt := range []struct {
		name           string
		req            *v1alpha1.MountRequest
		param          string
		wantMode       int32
		secretsRefused bool
	}{
		{"driver request", &v1alpha1.MountRequest{Attributes: string(attrs), Secrets: "{}", Permission: "420"}, "", 0o644, false},
		{"secrets null", &v1alpha1.MountRequest{Attributes: string(attrs), Secrets: "null", Permission: "256"}, "", 0o400, false},
		{"attributes not json", &v1alpha1.MountRequest{Attributes: "{", Secrets: "{}", Permission: "420"}, "attributes", 0, false},
		{"attributes not strings", &v1alpha1.MountRequest{Attributes: `{"keyvaultName": 5}`, Secrets: "{}", Permission: "420"}, "attributes", 0, false},
		{"permission not a number", &v1alpha1.MountRequest{Attributes: string(attrs), Secrets: "{}", Permission: `"rw"`}, "permission", 0, false},
		{"permission too large", &v1alpha1.MountRequest{Attributes: string(attrs), Secrets: "{}", Permission: "4096"}, "permission", 0, false},
		{"service principal secret", &v1alpha1.MountRequest{Attributes: string(attrs), Secrets: `{"clientid":"a","clientsecret":"b"}`, Permission: "420"}, "nodePublishSecretRef", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseRequest(tt.req)
			if tt.param != "" {
				var pe *ParamError
				if !errors.As(err, &pe) || pe.Param != tt.param {
					t.Fatalf("want a ParamError on %s, got %v", tt.param, err)
				}
				if tt.secretsRefused && strings.Contains(err.Error(), `"b"`) {
					t.Errorf("the error quotes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Objects[0].mode != tt.wantMode {
				t.Errorf("mode %o, want %o", m.Objects[0].mode, tt.wantMode)
			}
		})
	}
}

// The ServiceAccount token never appears in a parameter error.
func TestParseNeverQuotesTheToken(t *testing.T) {
	_, err := Parse(with(AttrServiceAccounts, `{"api://AzureADTokenExchange":{"token":"SECRET-TOKEN","expirationTimestamp":5}}`), 0o644)
	if err == nil || strings.Contains(err.Error(), "SECRET-TOKEN") {
		t.Fatalf("err %v", err)
	}
}

func FuzzParseRequest(f *testing.F) {
	attrs, _ := json.Marshal(baseAttrs())
	f.Add(string(attrs), "{}", "420")
	f.Add(`{"objects":"array:\n  - |\n    objectName: a\n"}`, "", "0")
	f.Fuzz(func(t *testing.T, a, s, p string) {
		m, err := ParseRequest(&v1alpha1.MountRequest{Attributes: a, Secrets: s, Permission: p})
		if err != nil {
			return
		}
		for _, o := range m.Objects {
			if validFileName(o.FileName()) != nil || o.mode < 0 || o.mode > 0o777 {
				t.Fatalf("accepted %+v", o)
			}
		}
	})
}
