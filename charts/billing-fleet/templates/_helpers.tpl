{{- define "billing-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "billing-fleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "billing-fleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "billing-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component (gateway, worker-NAME, migrate): pass (list $ "component"). */}}
{{- define "billing-fleet.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "billing-fleet.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "billing-fleet.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "billing-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "billing-fleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "billing-fleet.catalog" -}}
{{- .Values.catalog.content | default (.Files.Get "files/catalog.yaml") }}
{{- end }}

{{/* The Secret a secret setting comes from: its existingSecret, else the chart's own. */}}
{{- define "billing-fleet.secretEnv" -}}
{{- $root := index . 0 -}}
{{- $env := index . 1 -}}
{{- $s := index . 2 -}}
{{- if or $s.existingSecret $s.value }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.existingSecret | default (printf "%s-secrets" (include "billing-fleet.fullname" $root)) }}
      key: {{ $s.key }}
{{- end }}
{{- end }}

{{/* What every fleet container gets: the ConfigMap, the secret settings, a writable /tmp. */}}
{{- define "billing-fleet.commonEnv" -}}
{{- include "billing-fleet.secretEnv" (list . "BILLING_DATABASE_URL" .Values.secrets.databaseUrl) }}
{{- end }}

{{- define "billing-fleet.podSpecCommon" -}}
serviceAccountName: {{ include "billing-fleet.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The ConfigMap's settings as env entries: the migrate hook runs before the ConfigMap exists. */}}
{{- define "billing-fleet.configEnv" -}}
- name: BILLING_KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.config.kafkaBootstrapServers | quote }}
- name: BILLING_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
{{- range $name, $value := .Values.config.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{- define "billing-fleet.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/* Every Deployment as component -> {deployment, settings}: the gateway and each worker. */}}
{{- define "billing-fleet.components" -}}
{{- $full := include "billing-fleet.fullname" . }}
{{- $all := dict "gateway" (dict "deployment" (printf "%s-gateway" $full) "spec" .Values.gateway) }}
{{- range $name, $w := .Values.workers }}
{{- $_ := set $all (printf "worker-%s" $name) (dict "deployment" (printf "%s-worker-%s" $full $name) "spec" $w) }}
{{- end }}
{{- toJson $all }}
{{- end }}
