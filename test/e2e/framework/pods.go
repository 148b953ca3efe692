package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podid/podid/internal/workloadidentity"
)

// PodTimeout bounds how long a pod may take to become Ready. First pods on a warm
// node are Ready in about 2 s.
const PodTimeout = 90 * time.Second

// Where the workload-identity convention puts the projected token.
const (
	TokenExchangeAudience = workloadidentity.TokenAudience
	AzureTokenDir         = workloadidentity.TokenDir
	AzureTokenFile        = workloadidentity.TokenFile
)

// TestClientPod returns a pod running the test client (`testclient sleep`) from
// the locally imported image; callers adjust it (labels, service account, command,
// volumes) before CreatePod.
func TestClientPod(namespace, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name:            "client",
				Image:           TestClientImage,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"/testclient", "sleep"},
			}},
		},
	}
}

// AddProjectedToken mounts a projected service-account token for audience at
// AzureTokenFile in every container of pod, as the workload-identity webhook does.
func AddProjectedToken(pod *corev1.Pod, audience string) {
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name: "azure-identity-token",
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
			ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: audience, ExpirationSeconds: ptr.To[int64](3600), Path: "azure-identity-token",
			},
		}}}},
	})
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].VolumeMounts = append(pod.Spec.Containers[i].VolumeMounts,
			corev1.VolumeMount{Name: "azure-identity-token", MountPath: AzureTokenDir, ReadOnly: true})
	}
}

// CreatePod creates pod and waits until it is Ready; it fails t otherwise. The pod
// goes with its namespace.
func (c *Cluster) CreatePod(ctx context.Context, t testing.TB, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	if err := c.Client.Create(ctx, pod); err != nil {
		t.Fatalf("create pod %s: %v", describe(pod), err)
	}
	p, err := c.WaitForPodReady(ctx, pod.Namespace, pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// WaitForPod polls the pod until cond holds, for at most PodTimeout. It gives up
// early when the pod can no longer get there (a terminal phase, an image that
// cannot be found, a crash loop) unless cond accepts that state.
func (c *Cluster) WaitForPod(ctx context.Context, namespace, name string, cond func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var pod corev1.Pod
	var stuck error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, PodTimeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if cond(&pod) {
			return true, nil
		}
		if stuck = podStuck(&pod); stuck != nil {
			return false, stuck
		}
		return false, nil
	})
	if err != nil {
		return &pod, fmt.Errorf("pod %s/%s (phase %s): %w", namespace, name, pod.Status.Phase, err)
	}
	return &pod, nil
}

// WaitForPodReady waits until the pod is Ready.
func (c *Cluster) WaitForPodReady(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return c.WaitForPod(ctx, namespace, name, PodReady)
}

// WaitForPodDone waits until the pod has Succeeded or Failed (for run-once pods).
func (c *Cluster) WaitForPodDone(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return c.WaitForPod(ctx, namespace, name, func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
}

// PodReady reports whether the pod's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podStuck(p *corev1.Pod) error {
	if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		return fmt.Errorf("pod ended: %s %s", p.Status.Reason, p.Status.Message)
	}
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if w := s.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff", "RunContainerError":
				return fmt.Errorf("container %s: %s: %s", s.Name, w.Reason, w.Message)
			}
		}
	}
	return nil
}

// Logs returns a container's log (container "" means the pod's only container).
func (c *Cluster) Logs(ctx context.Context, namespace, pod, container string) (string, error) {
	b, err := c.Clientset.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	return string(b), err
}

// Exec runs cmd in a container of a running pod (container "" means the first)
// and returns its stdout and stderr. A non-zero exit is an error that includes stderr.
func (c *Cluster) Exec(ctx context.Context, namespace, pod, container string, cmd ...string) (stdout, stderr string, err error) {
	req := c.Clientset.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(c.Config, "GET", req.URL().String())
	if err != nil {
		return "", "", err
	}
	spdy, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, httpstream.IsUpgradeFailure)
	if err != nil {
		return "", "", err
	}
	var out, errOut bytes.Buffer
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if err != nil {
		err = fmt.Errorf("exec %q in %s/%s: %w (stderr: %s)", strings.Join(cmd, " "), namespace, pod, err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), errOut.String(), err
}

// ErrNoPodIP is returned by PodIP for a pod that has no address yet.
var ErrNoPodIP = errors.New("pod has no IP")

// PodIP returns the pod's IP.
func PodIP(p *corev1.Pod) (string, error) {
	if p.Status.PodIP == "" {
		return "", ErrNoPodIP
	}
	return p.Status.PodIP, nil
}
