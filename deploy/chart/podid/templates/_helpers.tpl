{{/* Labels every object carries. Names are fixed (podid-*): podid's webhooks,
policies and CRDs are cluster-wide, so one release per cluster. */}}
{{- define "podid.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: podid
{{- if not .root.Values.manifestsOnly }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}
{{- end }}

{{- define "podid.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
image: {{ printf "%s:%s" .Values.image.repository $tag | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- end }}

{{/* The identity provider every component points at: podid sts when it is on,
else .Values.authority. Always ends with "/". */}}
{{- define "podid.authority" -}}
{{- if .Values.sts.enabled -}}
{{- printf "https://%s/" (include "podid.sts.host" .) -}}
{{- else -}}
{{- printf "%s/" (trimSuffix "/" .Values.authority) -}}
{{- end -}}
{{- end }}

{{/* The name clients use to reach the sts: the fixed Service IP when set (no
cluster DNS needed), else the Service's DNS name. */}}
{{- define "podid.sts.host" -}}
{{- if .Values.sts.service.clusterIP -}}
{{- .Values.sts.service.clusterIP -}}
{{- else -}}
{{- printf "podid-sts.%s.svc" .Release.Namespace -}}
{{- end -}}
{{- end }}

{{/* The sts CA: kept from the existing Secret on upgrade (lookup), generated
once on install. Rendered offline (helm template, lookup returns nothing) it is
new each time, so the rendered manifests under deploy/ do not use it. Computed
once per render (kept on the root context) so every object gets the same CA. */}}
{{- define "podid.sts.ca" -}}
{{- if not (hasKey $ "podidSTSCA") -}}
{{- $s := lookup "v1" "Secret" .Release.Namespace "podid-sts-ca-key" -}}
{{- if and $s $s.data (index $s.data "tls.crt") (index $s.data "tls.key") -}}
{{- $_ := set $ "podidSTSCA" (dict "crt" (index $s.data "tls.crt" | b64dec) "key" (index $s.data "tls.key" | b64dec)) -}}
{{- else -}}
{{- $ca := genCA "podid sts CA" (int .Values.sts.ca.validityDays) -}}
{{- $_ := set $ "podidSTSCA" (dict "crt" $ca.Cert "key" $ca.Key) -}}
{{- end -}}
{{- end -}}
{{- toJson $.podidSTSCA -}}
{{- end }}

{{/* Whether the chart manages the sts CA (and so can hand it to the agent and
the webhook). */}}
{{- define "podid.sts.managedCA" -}}
{{- if and .Values.sts.enabled .Values.sts.ca.create -}}true{{- end -}}
{{- end }}

{{- define "podid.tenantID" -}}
{{- if and (not .Values.sts.enabled) (not .Values.tenantID) -}}
{{- fail "tenantID is required when sts.enabled is false: real Entra ID needs the tenant (values-entra.yaml)" -}}
{{- end -}}
{{- .Values.tenantID -}}
{{- end }}

{{- define "podid.pod" -}}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "podid.agent.ca" -}}
{{- if include "podid.sts.managedCA" . -}}
{{- (include "podid.sts.ca" . | fromJson).crt -}}
{{- else -}}
{{- .Values.agent.authorityCA -}}
{{- end -}}
{{- end }}

{{/* sts.bootstrap as given, else one tenant: .Values.tenantID. With
helmTest.enabled, the test's identity (federated with its ServiceAccount) is
added to that tenant. */}}
{{- define "podid.sts.bootstrap" -}}
{{- $b := dict "tenants" (list (dict "id" (required "tenantID is required: it names the sts's tenant" .Values.tenantID) "domains" (list "podid.local"))) -}}
{{- if .Values.sts.bootstrap -}}
{{- $b = deepCopy .Values.sts.bootstrap -}}
{{- end -}}
{{- if .Values.helmTest.enabled -}}
{{- $fic := dict "name" "podid-helm-test" "issuer" .Values.sts.saIssuer "subject" (printf "system:serviceaccount:%s:podid-helm-test" .Release.Namespace) "audiences" (list "api://AzureADTokenExchange") -}}
{{- $id := dict "subscription" "00000000-0000-4000-8000-000000000000" "resourceGroup" "podid" "name" "podid-helm-test" "clientId" .Values.helmTest.clientID "federatedIdentityCredentials" (list $fic) -}}
{{- $found := false -}}
{{- range $t := $b.tenants -}}
{{- if eq $t.id $.Values.tenantID -}}
{{- $_ := set $t "identities" (append ($t.identities | default list) $id) -}}
{{- $found = true -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail "helmTest.enabled: sts.bootstrap has no tenant tenantID to hold the test identity" -}}
{{- end -}}
{{- end -}}
{{- toYaml $b -}}
{{- end }}

{{- define "podid.pdb" -}}
{{- $c := .c }}
{{- if and $c.podDisruptionBudget.enabled (gt (int $c.replicas) 1) }}
# A voluntary disruption (node drain) keeps the others serving.
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: podid-{{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "podid.labels" (dict "name" (printf "podid-%s" .name) "root" .root) | nindent 4 }}
spec:
  maxUnavailable: {{ $c.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      app.kubernetes.io/name: podid-{{ .name }}
{{- end }}
{{- end }}

{{/* The broker's URL as agents reach it: the fixed Service IP when set (no
cluster DNS needed), else the Service's DNS name. */}}
{{- define "podid.broker.url" -}}
{{- $host := printf "podid-broker.%s.svc" .Release.Namespace -}}
{{- with .Values.broker.service.clusterIP -}}{{- $host = . -}}{{- end -}}
{{- printf "https://%s:%d" $host (int .Values.broker.port) -}}
{{- end }}

{{/* The broker's CA and serving certificate: kept from the existing Secret
on upgrade (lookup), generated once on install. Computed once per render. */}}
{{- define "podid.broker.tls" -}}
{{- if not (hasKey $ "podidBrokerTLS") -}}
{{- $s := lookup "v1" "Secret" .Release.Namespace "podid-broker-tls" -}}
{{- if and $s $s.data (index $s.data "tls.crt") (index $s.data "tls.key") (index $s.data "ca.crt") -}}
{{- $_ := set $ "podidBrokerTLS" (dict "crt" (index $s.data "tls.crt" | b64dec) "key" (index $s.data "tls.key" | b64dec) "ca" (index $s.data "ca.crt" | b64dec)) -}}
{{- else -}}
{{- $ca := genCA "podid broker CA" (int .Values.broker.tls.validityDays) -}}
{{- $ns := .Release.Namespace -}}
{{- $dns := list "podid-broker" (printf "podid-broker.%s" $ns) (printf "podid-broker.%s.svc" $ns) (printf "podid-broker.%s.svc.cluster.local" $ns) -}}
{{- $ips := list -}}
{{- with .Values.broker.service.clusterIP -}}{{- $ips = list . -}}{{- end -}}
{{- $cert := genSignedCert "podid-broker" $ips $dns (int .Values.broker.tls.validityDays) $ca -}}
{{- $_ := set $ "podidBrokerTLS" (dict "crt" $cert.Cert "key" $cert.Key "ca" $ca.Cert) -}}
{{- end -}}
{{- end -}}
{{- toJson $.podidBrokerTLS -}}
{{- end }}

{{/* The broker's CA as the agents trust it: the chart's (broker.tls.create),
else broker.tls.ca. */}}
{{- define "podid.broker.ca" -}}
{{- if .Values.broker.tls.create -}}
{{- (include "podid.broker.tls" . | fromJson).ca -}}
{{- else -}}
{{- .Values.broker.tls.ca -}}
{{- end -}}
{{- end }}

{{/* The authority workloads are given (the webhook's AZURE_AUTHORITY_HOST):
the local cloud's public authority when localCloud.enabled, else the one every
component uses. Always ends with "/". */}}
{{- define "podid.workloadAuthority" -}}
{{- if .Values.localCloud.enabled -}}
{{- printf "%s/" (trimSuffix "/" .Values.localCloud.authority) -}}
{{- else -}}
{{- include "podid.authority" . -}}
{{- end -}}
{{- end }}

{{/* The local cloud's name table resolved: a JSON list of {name, fqdn, sts},
fqdn the Service's cluster DNS name, sts whether podid-sts answers it. */}}
{{- define "podid.localCloud.names" -}}
{{- $out := list -}}
{{- if .Values.localCloud.enabled -}}
{{- range .Values.localCloud.names -}}
{{- $svc := .service -}}
{{- if not (contains "." $svc) -}}{{- $svc = printf "%s.%s" $svc $.Release.Namespace -}}{{- end -}}
{{- $sts := eq $svc (printf "podid-sts.%s" $.Release.Namespace) -}}
{{- if and $sts (not $.Values.sts.enabled) -}}
{{- fail (printf "localCloud.names: %s is answered by podid-sts, but sts.enabled is false" .name) -}}
{{- end -}}
{{- $out = append $out (dict "name" .name "fqdn" (printf "%s.svc.%s" $svc $.Values.localCloud.clusterDomain) "sts" $sts) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end }}
