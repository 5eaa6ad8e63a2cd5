{{/*
Names, labels and the pieces every workload shares. The controller finds
several objects by the names built here (see charts/NOTES-for-merge.md):
<fullname>-server, <fullname>-webhook, <fullname>-webhook-tls,
<fullname>-sidecar-injector, <fullname>-controller.
*/}}

{{- define "syncfolder.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
<release>-<chart>, or the release name alone when it already contains the
chart name. Cut to 40 characters so that every derived name
(<fullname>-sidecar-injector is the longest suffix) stays within 63.
*/}}
{{- define "syncfolder.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "syncfolder.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; pass (dict "root" $ "component" "server"). */}}
{{- define "syncfolder.labels" -}}
helm.sh/chart: {{ include "syncfolder.chart" .root }}
{{ include "syncfolder.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: syncfolder
{{- end }}

{{/* The labels that select a component's pods; same argument as syncfolder.labels. */}}
{{- define "syncfolder.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncfolder.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "syncfolder.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "syncfolder.serverServiceName" -}}
{{- printf "%s-server" (include "syncfolder.fullname" .) }}
{{- end }}

{{/* The URL the controller (and every SyncFolder without spec.server) reaches the server at. */}}
{{- define "syncfolder.serverUrl" -}}
{{- printf "http://%s.%s.svc:8080" (include "syncfolder.serverServiceName" .) .Release.Namespace }}
{{- end }}

{{- define "syncfolder.controllerName" -}}
{{- printf "%s-controller" (include "syncfolder.fullname" .) }}
{{- end }}

{{- define "syncfolder.webhookServiceName" -}}
{{- printf "%s-webhook" (include "syncfolder.fullname" .) }}
{{- end }}

{{- define "syncfolder.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "syncfolder.fullname" .) }}
{{- end }}

{{- define "syncfolder.webhookConfigurationName" -}}
{{- printf "%s-sidecar-injector" (include "syncfolder.fullname" .) }}
{{- end }}

{{/* The controller patches the webhook's caBundle itself unless cert-manager injects it. */}}
{{- define "syncfolder.controllerManagesWebhookCertificate" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.certManager.enabled) }}true{{ end }}
{{- end }}

{{- define "syncfolder.adminTokenSecretName" -}}
{{- if .Values.server.adminToken.existingSecret }}
{{- .Values.server.adminToken.existingSecret }}
{{- else }}
{{- printf "%s-admin-token" (include "syncfolder.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Pod Security Standards' restricted profile, pod level. */}}
{{- define "syncfolder.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The restricted profile, container level. */}}
{{- define "syncfolder.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* An HTTP probe on a named port; pass (dict "path" "/healthz" "port" "http"). */}}
{{- define "syncfolder.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
  scheme: HTTP
periodSeconds: {{ .period | default 10 }}
timeoutSeconds: 2
failureThreshold: {{ .failures | default 3 }}
successThreshold: 1
{{- end }}

{{/*
"true" in scale-out mode: metadata in PostgreSQL and chunks in S3-compatible
storage, so the server keeps nothing on its own volume and any number of
replicas sit behind the Service; empty in the embedded default (SQLite and
chunk files on the PersistentVolumeClaim, one replica).
*/}}
{{- define "syncfolder.scaleOut" -}}
{{- if and .Values.metadata.postgres.urlSecret.name .Values.chunks.s3.bucket }}true{{ end }}
{{- end }}

{{/*
Refuses values that would render a server that cannot work; helm prints the
message and renders nothing.
*/}}
{{- define "syncfolder.checkServerStorage" -}}
{{- $replicas := int .Values.server.replicas }}
{{- $postgres := .Values.metadata.postgres }}
{{- $s3 := .Values.chunks.s3 }}
{{- if and (gt $replicas 1) (not (include "syncfolder.scaleOut" .)) }}
{{- $missing := list }}
{{- if not $postgres.urlSecret.name }}{{ $missing = append $missing "metadata.postgres.urlSecret.name (a Secret with the PostgreSQL URL)" }}{{ end }}
{{- if not $s3.bucket }}{{ $missing = append $missing "chunks.s3.bucket (S3-compatible storage for the chunks)" }}{{ end }}
{{- fail (printf "server.replicas is %d, but several server replicas cannot share one ReadWriteOnce volume: set %s, or set server.replicas to 1" $replicas (join " and " $missing)) }}
{{- end }}
{{- if and $postgres.passwordSecret.name (not $postgres.urlSecret.name) }}
{{- fail "metadata.postgres.passwordSecret.name is set without metadata.postgres.urlSecret.name: name the Secret with the PostgreSQL URL too" }}
{{- end }}
{{- if not $s3.bucket }}
{{- range $setting := list "prefix" "endpoint" "region" }}
{{- if get $s3 $setting }}
{{- fail (printf "chunks.s3.%s is set without chunks.s3.bucket: name the bucket too" $setting) }}
{{- end }}
{{- end }}
{{- if $s3.credentialsSecret.name }}
{{- fail "chunks.s3.credentialsSecret.name is set without chunks.s3.bucket: name the bucket too" }}
{{- end }}
{{- end }}
{{- if and (hasPrefix "http://" $s3.endpoint) (not $s3.allowHttp) }}
{{- fail (printf "chunks.s3.endpoint %s is plain HTTP: set chunks.s3.allowHttp=true to allow it" $s3.endpoint) }}
{{- end }}
{{- end }}

{{/* The --chunk-store URL: s3://BUCKET or s3://BUCKET/PREFIX. */}}
{{- define "syncfolder.chunkStoreUrl" -}}
{{- $prefix := trimAll "/" .Values.chunks.s3.prefix }}
{{- if $prefix }}
{{- printf "s3://%s/%s" .Values.chunks.s3.bucket $prefix }}
{{- else }}
{{- printf "s3://%s" .Values.chunks.s3.bucket }}
{{- end }}
{{- end }}
