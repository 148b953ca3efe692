package csiprovider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"

	"github.com/podid/podid/internal/workloadidentity"
)

// SecretProviderClass parameters, named as the Azure provider names them.
const (
	ParamKeyVaultName           = "keyvaultName"
	ParamObjects                = "objects"
	ParamTenantID               = "tenantId"
	ParamTenantIDNew            = "tenantID" // the Azure provider prefers it over tenantId
	ParamCloudName              = "cloudName"
	ParamClientID               = "clientID"
	ParamUsePodIdentity         = "usePodIdentity"
	ParamUseVMManagedIdentity   = "useVMManagedIdentity"
	ParamUserAssignedIdentityID = "userAssignedIdentityID"
)

// Attributes the driver adds to the parameters (podInfoOnMount and
// tokenRequests on the CSIDriver object).
const (
	AttrPodName         = "csi.storage.k8s.io/pod.name"
	AttrPodNamespace    = "csi.storage.k8s.io/pod.namespace"
	AttrPodUID          = "csi.storage.k8s.io/pod.uid"
	AttrServiceAccount  = "csi.storage.k8s.io/serviceAccount.name"
	AttrServiceAccounts = "csi.storage.k8s.io/serviceAccount.tokens"
)

// Object types and encodings of the objects parameter.
const (
	TypeSecret = "secret"
	TypeKey    = "key"
	TypeCert   = "cert"

	FormatPEM = "pem"
	FormatPFX = "pfx"

	EncodingUTF8   = "utf-8"
	EncodingBase64 = "base64"
	EncodingHex    = "hex"
)

// Bounds on what one SecretProviderClass may ask for.
const (
	maxObjects        = 256
	maxObjectsBytes   = 64 << 10
	maxVersionHistory = 32
)

// Mode is how the identity of a mount is chosen.
type Mode int

const (
	// ModeWorkloadIdentity: clientID, with the pod's ServiceAccount token.
	ModeWorkloadIdentity Mode = iota + 1
	// ModePodIdentity: usePodIdentity, the identity the pod's v1 binding gives it.
	ModePodIdentity
	// ModeVMManagedIdentity: useVMManagedIdentity + userAssignedIdentityID,
	// allowed per pod by an administrator's grant.
	ModeVMManagedIdentity
)

func (m Mode) String() string {
	switch m {
	case ModeWorkloadIdentity:
		return "workload identity (clientID)"
	case ModePodIdentity:
		return "pod identity (usePodIdentity)"
	case ModeVMManagedIdentity:
		return "managed identity (useVMManagedIdentity)"
	}
	return "none"
}

// Pod is the mounting pod, as the driver describes it.
type Pod struct {
	Namespace, Name, UID, ServiceAccount string
}

func (p Pod) String() string { return p.Namespace + "/" + p.Name }

// Object is one entry of the objects parameter.
type Object struct {
	Name           string `yaml:"objectName"`
	Alias          string `yaml:"objectAlias"`
	Version        string `yaml:"objectVersion"`
	VersionHistory int32  `yaml:"objectVersionHistory"`
	Type           string `yaml:"objectType"`
	Format         string `yaml:"objectFormat"`
	Encoding       string `yaml:"objectEncoding"`
	FilePermission string `yaml:"filePermission"`

	// mode is FilePermission parsed, or the mount's default.
	mode int32
}

// FileName is the path the object is written to: its alias, else its name.
func (o Object) FileName() string {
	if o.Alias != "" {
		return o.Alias
	}
	return o.Name
}

// ID identifies the object in the driver's SecretProviderClassPodStatus and
// in the versions it hands back on rotation: "<type>/<name>", as the Azure
// provider writes it; "<type>/<name>/<index>" for an entry of a version
// history.
func (o Object) ID() string { return o.Type + "/" + o.Name }

// latest reports whether the object asks for the current version.
func (o Object) latest() bool { return o.Version == "" || strings.EqualFold(o.Version, "latest") }

func (o Object) String() string {
	return fmt.Sprintf("objectType:%s, objectName:%s, objectVersion:%s", o.Type, o.Name, o.Version)
}

// Mount is one parsed Mount request.
type Mount struct {
	VaultName string
	TenantID  string
	CloudName string
	Mode      Mode
	// IdentityClientID is the identity asked for: clientID, or
	// userAssignedIdentityID; empty for pod identity.
	IdentityClientID string
	Pod              Pod
	// SAToken is the pod's ServiceAccount token for the token-exchange
	// audience, bound to the pod, as the driver passes it (empty when the
	// CSIDriver object asks for none). Never logged.
	SAToken string
	Objects []Object
}

// ParamError is a SecretProviderClass parameter (or driver attribute) that
// cannot be used.
type ParamError struct {
	Param string
	Msg   string
	Err   error
}

func (e *ParamError) Error() string {
	s := "parameter " + e.Param + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ParamError) Unwrap() error { return e.Err }

var vaultNameRE = regexp.MustCompile(`^[-A-Za-z0-9]{3,24}$`)

// ParseRequest reads a MountRequest's attributes and file permission.
// nodePublishSecretRef secrets are refused: podid keeps no client secrets.
func ParseRequest(req *v1alpha1.MountRequest) (*Mount, error) {
	var attrs map[string]string
	if err := json.Unmarshal([]byte(req.GetAttributes()), &attrs); err != nil {
		return nil, &ParamError{Param: "attributes", Msg: "not a JSON object of strings", Err: err}
	}
	if s := strings.TrimSpace(req.GetSecrets()); s != "" && s != "{}" && s != "null" {
		var secrets map[string]string
		if err := json.Unmarshal([]byte(s), &secrets); err != nil || len(secrets) > 0 {
			return nil, &ParamError{Param: "nodePublishSecretRef", Msg: "service-principal secrets are not supported: name an identity with clientID, usePodIdentity or useVMManagedIdentity"}
		}
	}
	var perm os.FileMode
	if err := json.Unmarshal([]byte(req.GetPermission()), &perm); err != nil || perm > 0o777 {
		return nil, &ParamError{Param: "permission", Msg: fmt.Sprintf("%q is not a file mode between 0 and 0777", req.GetPermission())}
	}
	return Parse(attrs, int32(perm))
}

// Parse reads the parameters (with the driver's attributes) of one mount;
// defaultMode is the mode of files whose object sets no filePermission.
func Parse(attrs map[string]string, defaultMode int32) (*Mount, error) {
	get := func(k string) string { return strings.TrimSpace(attrs[k]) }
	m := &Mount{
		VaultName: get(ParamKeyVaultName),
		CloudName: get(ParamCloudName),
		Pod: Pod{Namespace: get(AttrPodNamespace), Name: get(AttrPodName), UID: get(AttrPodUID),
			ServiceAccount: get(AttrServiceAccount)},
	}
	if m.Pod.Name == "" || m.Pod.Namespace == "" {
		return nil, &ParamError{Param: AttrPodName, Msg: "the driver passed no pod name or namespace: its CSIDriver object needs podInfoOnMount: true"}
	}
	m.TenantID = get(ParamTenantIDNew)
	if m.TenantID == "" {
		m.TenantID = get(ParamTenantID)
	}
	if m.TenantID == "" {
		return nil, &ParamError{Param: ParamTenantID, Msg: "is not set"}
	}
	if m.VaultName == "" {
		return nil, &ParamError{Param: ParamKeyVaultName, Msg: "is not set"}
	}
	if !vaultNameRE.MatchString(m.VaultName) {
		return nil, &ParamError{Param: ParamKeyVaultName, Msg: fmt.Sprintf("%q is not a vault name (3-24 letters, digits and '-')", m.VaultName)}
	}
	if err := m.parseMode(get); err != nil {
		return nil, err
	}
	if m.Mode != ModePodIdentity {
		tok, err := saToken(get(AttrServiceAccounts))
		if err != nil {
			return nil, err
		}
		m.SAToken = tok
	}
	objs, err := ParseObjects(get(ParamObjects), defaultMode)
	if err != nil {
		return nil, err
	}
	m.Objects = objs
	return m, nil
}

func boolParam(get func(string) string, k string) (bool, error) {
	s := get(k)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, &ParamError{Param: k, Msg: fmt.Sprintf("%q is not true or false", s)}
	}
	return b, nil
}

// parseMode picks the identity mode as the Azure provider does: at most one
// of usePodIdentity and useVMManagedIdentity; otherwise clientID.
func (m *Mount) parseMode(get func(string) string) error {
	pod, err := boolParam(get, ParamUsePodIdentity)
	if err != nil {
		return err
	}
	vm, err := boolParam(get, ParamUseVMManagedIdentity)
	if err != nil {
		return err
	}
	switch {
	case pod && vm:
		return &ParamError{Param: ParamUsePodIdentity, Msg: "only one identity mode can be enabled at a time: usePodIdentity or useVMManagedIdentity"}
	case pod:
		m.Mode = ModePodIdentity
	case vm:
		m.Mode = ModeVMManagedIdentity
		m.IdentityClientID = get(ParamUserAssignedIdentityID)
		if m.IdentityClientID == "" {
			// On AKS an empty id means the node's system-assigned identity;
			// podid attaches no identity to nodes.
			return &ParamError{Param: ParamUserAssignedIdentityID, Msg: "is required with useVMManagedIdentity: podid attaches no identity to nodes, name the user-assigned identity's client id"}
		}
	default:
		m.Mode = ModeWorkloadIdentity
		m.IdentityClientID = get(ParamClientID)
		if m.IdentityClientID == "" {
			return &ParamError{Param: ParamClientID, Msg: "no identity: set clientID (workload identity), usePodIdentity or useVMManagedIdentity + userAssignedIdentityID"}
		}
	}
	return nil
}

// saToken picks the token for the token-exchange audience from the
// driver's csi.storage.k8s.io/serviceAccount.tokens attribute: a JSON object
// of audience -> {token, expirationTimestamp}.
func saToken(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	var toks map[string]struct {
		Token               string    `json:"token"`
		ExpirationTimestamp time.Time `json:"expirationTimestamp"`
	}
	if err := json.Unmarshal([]byte(s), &toks); err != nil {
		// The token is never quoted back: only the shape is wrong.
		return "", &ParamError{Param: AttrServiceAccounts, Msg: "is not the driver's JSON object of audience to token"}
	}
	return toks[workloadidentity.TokenAudience].Token, nil
}

// ParseObjects reads the objects parameter: YAML with an `array:` of
// strings, each itself the YAML of one object.
func ParseObjects(s string, defaultMode int32) ([]Object, error) {
	if s == "" {
		return nil, &ParamError{Param: ParamObjects, Msg: "is not set"}
	}
	if len(s) > maxObjectsBytes {
		return nil, &ParamError{Param: ParamObjects, Msg: fmt.Sprintf("is %d bytes, more than %d", len(s), maxObjectsBytes)}
	}
	var list struct {
		Array []string `yaml:"array"`
	}
	if err := strictYAML(s, &list); err != nil {
		return nil, &ParamError{Param: ParamObjects, Msg: "is not YAML with an `array:` of objects", Err: err}
	}
	if len(list.Array) == 0 {
		return nil, &ParamError{Param: ParamObjects, Msg: "names no object (array: is empty)"}
	}
	if len(list.Array) > maxObjects {
		return nil, &ParamError{Param: ParamObjects, Msg: fmt.Sprintf("names %d objects, more than %d", len(list.Array), maxObjects)}
	}
	out := make([]Object, 0, len(list.Array))
	files := map[string]int{}
	for i, item := range list.Array {
		var o Object
		if err := strictYAML(item, &o); err != nil {
			return nil, &ParamError{Param: ParamObjects, Msg: fmt.Sprintf("array[%d] is not an object", i), Err: err}
		}
		o.trim()
		if err := o.validate(defaultMode); err != nil {
			return nil, &ParamError{Param: ParamObjects, Msg: fmt.Sprintf("array[%d] (%s)", i, o), Err: err}
		}
		if j, dup := files[o.FileName()]; dup {
			return nil, &ParamError{Param: ParamObjects, Msg: fmt.Sprintf("array[%d] and array[%d] both write file %q: give one an objectAlias", j, i, o.FileName())}
		}
		files[o.FileName()] = i
		out = append(out, o)
	}
	return out, nil
}

// strictYAML decodes one YAML document, refusing unknown keys (a misspelt
// key would otherwise be silently ignored) and trailing documents.
func strictYAML(s string, v any) error {
	dec := yaml.NewDecoder(strings.NewReader(s))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty document")
		}
		return err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	return nil
}

func (o *Object) trim() {
	for _, p := range []*string{&o.Name, &o.Alias, &o.Version, &o.Type, &o.Format, &o.Encoding, &o.FilePermission} {
		*p = strings.TrimSpace(*p)
	}
	o.Type = strings.ToLower(o.Type)
}

// objectNameRE is Key Vault's rule for object names.
var objectNameRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)

func (o *Object) validate(defaultMode int32) error {
	if o.Name == "" {
		return errors.New("objectName is not set")
	}
	if !objectNameRE.MatchString(o.Name) {
		return fmt.Errorf("objectName %q is not a Key Vault object name (1-127 letters, digits and '-')", o.Name)
	}
	switch o.Type {
	case TypeSecret, TypeKey, TypeCert:
	case "":
		return errors.New("objectType is not set (secret, key or cert)")
	default:
		return fmt.Errorf("objectType %q is not secret, key or cert", o.Type)
	}
	if !o.latest() && !versionRE.MatchString(o.Version) {
		return fmt.Errorf("objectVersion %q is not a Key Vault version (letters and digits) or latest", o.Version)
	}
	if o.VersionHistory < 0 || o.VersionHistory > maxVersionHistory {
		return fmt.Errorf("objectVersionHistory %d is not between 0 and %d", o.VersionHistory, maxVersionHistory)
	}
	switch strings.ToLower(o.Format) {
	case "", FormatPEM, FormatPFX:
	default:
		return fmt.Errorf("objectFormat %q is not pem or pfx", o.Format)
	}
	switch strings.ToLower(o.Encoding) {
	case "", EncodingUTF8, EncodingBase64, EncodingHex:
	default:
		return fmt.Errorf("objectEncoding %q is not utf-8, base64 or hex", o.Encoding)
	}
	o.mode = defaultMode
	if o.FilePermission != "" {
		p, err := strconv.ParseInt(o.FilePermission, 8, 32)
		if err != nil || p < 0 || p > 0o777 {
			return fmt.Errorf("filePermission %q is not an octal file mode (e.g. 0440)", o.FilePermission)
		}
		o.mode = int32(p)
	}
	return validFileName(o.FileName())
}

// versionRE bounds an object version (Key Vault's are 32 hex digits).
var versionRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,64}$`)

// validFileName keeps the file inside the mount, as the driver requires
// (relative, no '..' element, not starting with '..').
func validFileName(name string) error {
	switch {
	case name == "":
		return errors.New("file name is empty")
	case path.IsAbs(name) || strings.HasPrefix(name, "\\"):
		return fmt.Errorf("file name %q must be a relative path", name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("file name %q must not contain '..'", name)
	case bytes.ContainsAny([]byte(name), "\x00\\"):
		return fmt.Errorf("file name %q has a NUL or backslash", name)
	}
	return nil
}
