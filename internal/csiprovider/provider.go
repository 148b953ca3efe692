package csiprovider

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"
)

// RuntimeName is what Version answers as the provider's name.
const RuntimeName = "podid-csi-provider"

// Credentials obtains the credential of the identity a mount's pod may use.
// Errors should be *IdentityError so the pod's event says whose identity
// was refused and why.
type Credentials interface {
	Credential(ctx context.Context, m *Mount, c Cloud) (azcore.TokenCredential, error)
}

// Cloud is one value of cloudName: where its vaults and its identity
// provider are.
type Cloud struct {
	// Name as written in cloudName (matched case-insensitively).
	Name string
	// VaultDNSSuffix: a vault's URL is https://<keyvaultName>.<suffix>/.
	VaultDNSSuffix string
	// Authority is the identity provider's base URL (no tenant).
	Authority string
}

// PublicClouds are the cloudName values the Azure provider knows.
var PublicClouds = []Cloud{
	{Name: "AzurePublicCloud", VaultDNSSuffix: "vault.azure.net", Authority: "https://login.microsoftonline.com/"},
	{Name: "AzureChinaCloud", VaultDNSSuffix: "vault.azure.cn", Authority: "https://login.chinacloudapi.cn/"},
	{Name: "AzureUSGovernmentCloud", VaultDNSSuffix: "vault.usgovcloudapi.net", Authority: "https://login.microsoftonline.us/"},
}

// Config configures a Server.
type Config struct {
	// Clouds by cloudName; DefaultCloud is used when a class names none.
	Clouds       []Cloud
	DefaultCloud string
	Credentials  Credentials
	// Transport carries vault requests (the vault's CA, local name
	// resolution); nil is azcore's default.
	Transport policy.Transporter
	// Concurrency bounds the objects fetched at once for one mount (default 4).
	Concurrency int
	Version     string
	Logger      *slog.Logger
	// Registerer receives the provider's metrics (nil: none).
	Registerer prometheus.Registerer
}

// Server is the provider: the driver's CSIDriverProvider gRPC service.
type Server struct {
	v1alpha1.UnimplementedCSIDriverProviderServer
	cfg     Config
	log     *slog.Logger
	mounts  *prometheus.HistogramVec
	objects prometheus.Counter
}

var _ v1alpha1.CSIDriverProviderServer = (*Server)(nil)

// New assembles a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("csiprovider: no Credentials")
	}
	if _, ok := cfg.cloud(cfg.DefaultCloud); !ok {
		return nil, fmt.Errorf("csiprovider: default cloud %q is not among the configured clouds", cfg.DefaultCloud)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mounts = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "podid_csi_mount_duration_seconds", Help: "Mount requests answered, by result (ok or the gRPC code).",
		Buckets: prometheus.ExponentialBuckets(0.002, 2, 12),
	}, []string{"result"})
	s.objects = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podid_csi_objects_fetched_total", Help: "Key Vault objects fetched for mounts.",
	})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.mounts); err != nil {
			return nil, err
		}
		if err := cfg.Registerer.Register(s.objects); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (c Config) cloud(name string) (Cloud, bool) {
	if name == "" {
		name = c.DefaultCloud
	}
	for _, cl := range c.Clouds {
		if strings.EqualFold(cl.Name, name) {
			return cl, true
		}
	}
	return Cloud{}, false
}

// Version implements CSIDriverProviderServer.
func (s *Server) Version(context.Context, *v1alpha1.VersionRequest) (*v1alpha1.VersionResponse, error) {
	return &v1alpha1.VersionResponse{Version: "v1alpha1", RuntimeName: RuntimeName, RuntimeVersion: cmp.Or(s.cfg.Version, "v0.0.0-dev")}, nil
}

// Mount implements CSIDriverProviderServer: every object, or an error.
func (s *Server) Mount(ctx context.Context, req *v1alpha1.MountRequest) (resp *v1alpha1.MountResponse, err error) {
	start := time.Now()
	var m *Mount
	defer func() {
		if r := recover(); r != nil {
			// A bug must fail this mount, not the provider every pod on the node needs.
			s.log.Error("mount panicked", "panic", fmt.Sprint(r))
			resp, err = nil, status.Error(codes.Internal, "podid csi-provider: internal error (see the provider's log)")
		}
		result := "ok"
		if err != nil {
			result = status.Code(err).String()
		}
		s.mounts.WithLabelValues(result).Observe(time.Since(start).Seconds())
		attrs := []any{"result", result, "duration", time.Since(start).Round(time.Millisecond)}
		if m != nil {
			attrs = append(attrs, "pod", m.Pod.String(), "vault", m.VaultName, "objects", len(m.Objects), "mode", m.Mode.String())
		}
		if err != nil {
			s.log.Warn("mount refused", append(attrs, "error", status.Convert(err).Message())...)
		} else {
			s.log.Info("mount", attrs...)
		}
	}()
	m, err = ParseRequest(req)
	if err != nil {
		return nil, grpcError(err)
	}
	files, versions, err := s.Fetch(ctx, m)
	if err != nil {
		return nil, grpcError(err)
	}
	return &v1alpha1.MountResponse{Files: files, ObjectVersion: versions}, nil
}

// Fetch obtains every object of m from its vault with the identity m's pod
// may use. It returns all of them or an error.
func (s *Server) Fetch(ctx context.Context, m *Mount) ([]*v1alpha1.File, []*v1alpha1.ObjectVersion, error) {
	cloud, ok := s.cfg.cloud(m.CloudName)
	if !ok {
		names := make([]string, 0, len(s.cfg.Clouds))
		for _, c := range s.cfg.Clouds {
			names = append(names, c.Name)
		}
		return nil, nil, &ParamError{Param: ParamCloudName, Msg: fmt.Sprintf("%q is not one of %s", m.CloudName, strings.Join(names, ", "))}
	}
	cred, err := s.cfg.Credentials.Credential(ctx, m, cloud)
	if err != nil {
		return nil, nil, err
	}
	f, err := s.newFetcher(m, cloud, cred)
	if err != nil {
		return nil, nil, err
	}
	// Expand version histories first: they decide the file names.
	var entries []entry
	for _, o := range m.Objects {
		es, err := f.expand(ctx, o)
		if err != nil {
			return nil, nil, err
		}
		entries = append(entries, es...)
	}
	files := make([]*v1alpha1.File, len(entries))
	versions := make([]*v1alpha1.ObjectVersion, len(entries))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	for i, e := range entries {
		g.Go(func() error {
			content, version, err := f.get(gctx, e.obj)
			if err != nil {
				return err
			}
			files[i] = &v1alpha1.File{Path: e.file, Mode: e.obj.mode, Contents: content}
			versions[i] = &v1alpha1.ObjectVersion{Id: e.id, Version: version}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	s.objects.Add(float64(len(entries)))
	return files, versions, nil
}

// entry is one file of a mount: an object, or one version of its history.
type entry struct {
	obj      Object
	file, id string
}

// fetcher reads a mount's objects with the unmodified Key Vault SDKs, one
// client per object type the mount asks for.
type fetcher struct {
	secrets *azsecrets.Client
	keys    *azkeys.Client
	certs   *azcertificates.Client
	m       *Mount
}

func (s *Server) newFetcher(m *Mount, cloud Cloud, cred azcore.TokenCredential) (fetcher, error) {
	vaultURL := "https://" + m.VaultName + "." + cloud.VaultDNSSuffix + "/"
	copts := azcore.ClientOptions{
		Transport: s.cfg.Transport,
		// The SDK's own retries would hold a failing mount for a minute;
		// the kubelet retries the mount itself.
		Retry: policy.RetryOptions{MaxRetries: 1},
	}
	// One credential for all clients: a token obtained by one is reused.
	cred = &identityCheck{cred: cred, m: m}
	f := fetcher{m: m}
	var err error
	for _, o := range m.Objects {
		switch {
		case o.Type == TypeSecret && f.secrets == nil:
			f.secrets, err = azsecrets.NewClient(vaultURL, cred, &azsecrets.ClientOptions{ClientOptions: copts})
		case o.Type == TypeKey && f.keys == nil:
			f.keys, err = azkeys.NewClient(vaultURL, cred, &azkeys.ClientOptions{ClientOptions: copts})
		case o.Type == TypeCert && f.certs == nil:
			f.certs, err = azcertificates.NewClient(vaultURL, cred, &azcertificates.ClientOptions{ClientOptions: copts})
		}
		if err != nil {
			return f, fmt.Errorf("vault %s: %w", vaultURL, err)
		}
	}
	return f, nil
}

// ver is one version of an object in a version history.
type ver struct {
	id      string
	created time.Time
	enabled bool
}

func verOf(id string, enabled *bool, created *time.Time) ver {
	v := ver{id: id, enabled: enabled == nil || *enabled}
	if created != nil {
		v.created = *created
	}
	return v
}

// versions lists the versions of an object (bounded) and names its
// current one.
func (f fetcher) versions(ctx context.Context, o Object) (all []ver, current string, err error) {
	enough := func() bool { return len(all) > 10*maxVersionHistory*maxVersionHistory } // bounds a huge history
	switch o.Type {
	case TypeKey:
		pager := f.keys.NewListKeyPropertiesVersionsPager(o.Name, nil)
		for pager.More() && !enough() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return nil, "", err
			}
			for _, p := range page.Value {
				if p != nil && p.KID != nil && p.Attributes != nil {
					all = append(all, verOf(p.KID.Version(), p.Attributes.Enabled, p.Attributes.Created))
				}
			}
		}
		cur, err := f.keys.GetKey(ctx, o.Name, "", nil)
		if err != nil || cur.Key == nil || cur.Key.KID == nil {
			return nil, "", err
		}
		return all, cur.Key.KID.Version(), nil
	case TypeCert:
		pager := f.certs.NewListCertificatePropertiesVersionsPager(o.Name, nil)
		for pager.More() && !enough() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return nil, "", err
			}
			for _, p := range page.Value {
				if p != nil && p.ID != nil && p.Attributes != nil {
					all = append(all, verOf(p.ID.Version(), p.Attributes.Enabled, p.Attributes.Created))
				}
			}
		}
		cur, err := f.certs.GetCertificate(ctx, o.Name, "", nil)
		if err != nil || cur.ID == nil {
			return nil, "", err
		}
		return all, cur.ID.Version(), nil
	default:
		pager := f.secrets.NewListSecretPropertiesVersionsPager(o.Name, nil)
		for pager.More() && !enough() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return nil, "", err
			}
			for _, p := range page.Value {
				if p != nil && p.ID != nil && p.Attributes != nil {
					all = append(all, verOf(p.ID.Version(), p.Attributes.Enabled, p.Attributes.Created))
				}
			}
		}
		cur, err := f.secrets.GetSecret(ctx, o.Name, "", nil)
		if err != nil || cur.ID == nil {
			return nil, "", err
		}
		return all, cur.ID.Version(), nil
	}
}

// expand turns an object with objectVersionHistory > 1 into one entry per
// version, newest first from objectVersion (or the latest): files
// <name>/0, <name>/1, ... as the Azure provider writes them.
func (f fetcher) expand(ctx context.Context, o Object) ([]entry, error) {
	if o.VersionHistory <= 1 {
		return []entry{{obj: o, file: o.FileName(), id: o.ID()}}, nil
	}
	all, cur, err := f.versions(ctx, o)
	if err != nil {
		return nil, f.objectError(o, err)
	}
	all = slices.DeleteFunc(all, func(v ver) bool { return !v.enabled })
	slices.SortStableFunc(all, func(a, b ver) int { return b.created.Compare(a.created) })
	// Creation times are whole seconds: the current version goes first
	// even when an older one was created in the same second.
	if i := slices.IndexFunc(all, func(v ver) bool { return v.id == cur }); i > 0 {
		v := all[i]
		copy(all[1:i+1], all[:i])
		all[0] = v
	}
	var out []entry
	found := o.latest()
	for _, v := range all {
		found = found || strings.EqualFold(v.id, o.Version)
		if !found {
			continue
		}
		e := o
		e.Version = v.id
		idx := strconv.Itoa(len(out))
		out = append(out, entry{obj: e, file: path.Join(o.FileName(), idx), id: o.ID() + "/" + idx})
		if len(out) == int(o.VersionHistory) {
			break
		}
	}
	if len(out) == 0 {
		return nil, &ObjectError{Object: o, Code: notFoundCode[o.Type], Msg: "no enabled version of the object (from objectVersion on) exists"}
	}
	return out, nil
}

var notFoundCode = map[string]string{TypeSecret: "SecretNotFound", TypeKey: "KeyNotFound", TypeCert: "CertificateNotFound"}

// get fetches one object and returns its file content and version.
func (f fetcher) get(ctx context.Context, o Object) ([]byte, string, error) {
	version := ""
	if !o.latest() {
		version = o.Version
	}
	switch o.Type {
	case TypeKey:
		res, err := f.keys.GetKey(ctx, o.Name, version, nil)
		if err != nil {
			return nil, "", f.objectError(o, err)
		}
		if res.Key == nil || res.Key.KID == nil {
			return nil, "", &ObjectError{Object: o, Msg: "Key Vault answered without a key or key id"}
		}
		content, err := publicKeyPEM(res.Key)
		if err != nil {
			return nil, "", &ObjectError{Object: o, Msg: err.Error()}
		}
		return content, res.Key.KID.Version(), nil
	case TypeCert:
		res, err := f.certs.GetCertificate(ctx, o.Name, version, nil)
		if err != nil {
			return nil, "", f.objectError(o, err)
		}
		if len(res.CER) == 0 || res.ID == nil {
			return nil, "", &ObjectError{Object: o, Msg: "Key Vault answered without a certificate or id"}
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.CER}), res.ID.Version(), nil
	}
	res, err := f.secrets.GetSecret(ctx, o.Name, version, nil)
	if err != nil {
		return nil, "", f.objectError(o, err)
	}
	if res.Value == nil || res.ID == nil {
		return nil, "", &ObjectError{Object: o, Msg: "Key Vault answered without a value or id"}
	}
	value := *res.Value
	// A certificate's secret: its key and certificates, as PEM (the
	// Azure provider's default), or the PKCS#12 file with objectFormat pfx.
	if res.KID != nil && *res.KID != "" {
		ct := ""
		if res.ContentType != nil {
			ct = *res.ContentType
		}
		switch {
		case strings.EqualFold(ct, ContentTypePEM):
		case strings.EqualFold(ct, ContentTypePFX):
			if !strings.EqualFold(o.Format, FormatPFX) {
				if value, err = pfxToPEM(value); err != nil {
					return nil, "", &ObjectError{Object: o, Msg: "the certificate's PKCS#12 secret could not be read: " + err.Error()}
				}
			}
		default:
			return nil, "", &ObjectError{Object: o, Msg: fmt.Sprintf("is a certificate's secret of unknown content type %q", bounded(ct, 64))}
		}
	}
	content := []byte(value)
	switch strings.ToLower(o.Encoding) {
	case EncodingBase64:
		if content, err = base64.StdEncoding.DecodeString(value); err != nil {
			return nil, "", &ObjectError{Object: o, Msg: "objectEncoding base64: the value is not base64"}
		}
	case EncodingHex:
		if content, err = hex.DecodeString(value); err != nil {
			return nil, "", &ObjectError{Object: o, Msg: "objectEncoding hex: the value is not hex"}
		}
	}
	return content, res.ID.Version(), nil
}

// ObjectError is one object the vault would not (or could not) give.
type ObjectError struct {
	Object Object
	// Status and Code are Key Vault's answer (0 and "" when it gave none).
	Status int
	Code   string
	Msg    string
	Err    error
}

func (e *ObjectError) Error() string {
	s := "failed to get " + e.Object.String() + ": "
	if e.Status != 0 {
		s += fmt.Sprintf("Key Vault answered %d %s", e.Status, e.Code)
		if e.Msg != "" {
			s += ": " + e.Msg
		}
		return s
	}
	if e.Code != "" {
		s += e.Code + ": "
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ObjectError) Unwrap() error { return e.Err }

// objectError turns the SDK's error for object o into an ObjectError, or
// passes an identity error through unchanged.
func (f fetcher) objectError(o Object, err error) error {
	var ie *IdentityError
	if errors.As(err, &ie) {
		return ie
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return &ObjectError{Object: o, Status: re.StatusCode, Code: re.ErrorCode, Msg: vaultMessage(re)}
	}
	return &ObjectError{Object: o, Msg: "vault " + f.m.VaultName + " unreachable", Err: err}
}

// vaultMessage is the error message of a Key Vault error body
// ({"error":{"code","message"}}), bounded.
func vaultMessage(re *azcore.ResponseError) string {
	if re.RawResponse == nil || re.RawResponse.Body == nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(re.RawResponse.Body, 16<<10))
	var body struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &body) != nil {
		return ""
	}
	return bounded(body.Error.Message, 300)
}

func bounded(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// IdentityError is a mount whose pod may not have (or did not get) the
// identity it asked for.
type IdentityError struct {
	Mode     Mode
	ClientID string
	Pod      Pod
	// Code is the identity provider's code (AADSTS…) or podid's reason.
	Code string
	Msg  string
	// Denied: the pod is not allowed the identity (not a transient failure).
	Denied bool
	Err    error
}

func (e *IdentityError) Error() string {
	who := e.Mode.String()
	if e.ClientID != "" {
		who += " " + e.ClientID
	}
	s := fmt.Sprintf("identity %s for pod %s", who, e.Pod)
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *IdentityError) Unwrap() error { return e.Err }

// identityCheck turns the credential's failures into IdentityErrors, so a
// vault call that failed for want of a token says so and not "vault error".
type identityCheck struct {
	cred azcore.TokenCredential
	m    *Mount
}

func (c *identityCheck) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	t, err := c.cred.GetToken(ctx, o)
	if err == nil {
		return t, nil
	}
	var ie *IdentityError
	if errors.As(err, &ie) {
		return t, err
	}
	e := &IdentityError{Mode: c.m.Mode, ClientID: c.m.IdentityClientID, Pod: c.m.Pod, Err: err}
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) {
		e.Err = nil
		e.Code, e.Msg = aadError(afe)
		e.Denied = afe.RawResponse != nil && afe.RawResponse.StatusCode < 500
	}
	return t, e
}

// aadError reads the identity provider's error code (AADSTS…) and
// description from a failed token request.
func aadError(afe *azidentity.AuthenticationFailedError) (code, msg string) {
	if afe.RawResponse == nil || afe.RawResponse.Body == nil {
		return "", bounded(afe.Error(), 300)
	}
	b, _ := io.ReadAll(io.LimitReader(afe.RawResponse.Body, 16<<10))
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(b, &body) != nil || body.Description == "" {
		return strconv.Itoa(afe.RawResponse.StatusCode), ""
	}
	d := strings.SplitN(body.Description, "\n", 2)[0]
	code, rest, ok := strings.Cut(d, ":")
	if !ok || !strings.HasPrefix(code, "AADSTS") {
		return body.Error, bounded(d, 300)
	}
	return code, bounded(strings.TrimSpace(rest), 300)
}

// grpcError maps podid's typed errors to gRPC codes; the message is what the
// pod's FailedMount event shows.
func grpcError(err error) error {
	var (
		pe *ParamError
		oe *ObjectError
		ie *IdentityError
	)
	switch {
	case errors.As(err, &pe):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &ie):
		if ie.Denied {
			return status.Error(codes.PermissionDenied, err.Error())
		}
		return status.Error(codes.Unavailable, err.Error())
	case errors.As(err, &oe):
		switch oe.Status {
		case http.StatusNotFound:
			return status.Error(codes.NotFound, err.Error())
		case http.StatusForbidden:
			return status.Error(codes.PermissionDenied, err.Error())
		case http.StatusUnauthorized:
			return status.Error(codes.Unauthenticated, err.Error())
		case http.StatusBadRequest:
			return status.Error(codes.InvalidArgument, err.Error())
		case 0:
			if oe.Err != nil {
				return status.Error(codes.Unavailable, err.Error())
			}
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
