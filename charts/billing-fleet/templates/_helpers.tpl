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

{{/* BILLING_KAFKA_SECURITY_PROTOCOL: kafka.securityProtocol, else what kafka.tls and
kafka.sasl imply. */}}
{{- define "billing-fleet.kafkaProtocol" -}}
{{- $k := .Values.kafka -}}
{{- if $k.securityProtocol -}}
{{ $k.securityProtocol }}
{{- else if and $k.tls.enabled $k.sasl.enabled -}}
SASL_SSL
{{- else if $k.tls.enabled -}}
SSL
{{- else if $k.sasl.enabled -}}
SASL_PLAINTEXT
{{- else -}}
PLAINTEXT
{{- end }}
{{- end }}

{{/* What a Kafka client needs from kafka.tls and kafka.sasl, one part at a time: pass
(list $ "env"), (list $ "volumes") or (list $ "volumeMounts"). Every Deployment includes
it (the gateway and each worker); the migrate Job does not: it never connects to Kafka,
and the protocol without the mounted files would make its settings refuse to load.
Combinations the settings would refuse at startup fail the render instead. */}}
{{- define "billing-fleet.kafkaClient" -}}
{{- $root := index . 0 -}}
{{- $part := index . 1 -}}
{{- $tls := $root.Values.kafka.tls -}}
{{- $sasl := $root.Values.kafka.sasl -}}
{{- $protocol := include "billing-fleet.kafkaProtocol" $root -}}
{{- $usesTls := has $protocol (list "SSL" "SASL_SSL") -}}
{{- $usesSasl := has $protocol (list "SASL_PLAINTEXT" "SASL_SSL") -}}
{{- if and $tls.enabled (not $usesTls) }}
{{- fail (printf "kafka.tls.enabled needs a TLS protocol, but kafka.securityProtocol is %s" $protocol) }}
{{- end }}
{{- if ne (toString $sasl.enabled) (toString $usesSasl) }}
{{- fail (printf "kafka.securityProtocol %s and kafka.sasl.enabled %v disagree" $protocol $sasl.enabled) }}
{{- end }}
{{- if and $sasl.enabled (not $sasl.existingSecret) }}
{{- fail "kafka.sasl.enabled needs kafka.sasl.existingSecret (the Secret with the username and password)" }}
{{- end }}
{{- if and (or $tls.certKey $tls.keyKey $tls.keyPasswordKey) (not $tls.existingSecret) }}
{{- fail "kafka.tls.certKey, keyKey and keyPasswordKey name keys of kafka.tls.existingSecret, which is empty" }}
{{- end }}
{{- if and $tls.keyKey (not $tls.certKey) }}
{{- fail "kafka.tls.keyKey needs kafka.tls.certKey (BILLING_KAFKA_SSL_KEYFILE needs BILLING_KAFKA_SSL_CERTFILE)" }}
{{- end }}
{{- $mounted := and $tls.enabled $tls.existingSecret -}}
{{- $dir := "/etc/billing-fleet/kafka-tls" -}}
{{- if eq $part "env" }}
- name: BILLING_KAFKA_SECURITY_PROTOCOL
  value: {{ $protocol | quote }}
{{- if $usesTls }}
- name: BILLING_KAFKA_SSL_CHECK_HOSTNAME
  value: {{ $tls.checkHostname | toString | quote }}
{{- end }}
{{- if and $mounted $tls.caKey }}
- name: BILLING_KAFKA_SSL_CAFILE
  value: {{ $dir }}/ca.crt
{{- end }}
{{- if and $mounted $tls.certKey }}
- name: BILLING_KAFKA_SSL_CERTFILE
  value: {{ $dir }}/tls.crt
{{- end }}
{{- if and $mounted $tls.keyKey }}
- name: BILLING_KAFKA_SSL_KEYFILE
  value: {{ $dir }}/tls.key
{{- end }}
{{- if and $mounted $tls.keyPasswordKey }}
- name: BILLING_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $tls.existingSecret }}
      key: {{ $tls.keyPasswordKey }}
{{- end }}
{{- if $usesSasl }}
- name: BILLING_KAFKA_SASL_MECHANISM
  value: {{ $sasl.mechanism | quote }}
- name: BILLING_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $sasl.existingSecret }}
      key: {{ $sasl.usernameKey }}
- name: BILLING_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $sasl.existingSecret }}
      key: {{ $sasl.passwordKey }}
{{- end }}
{{- else if and (eq $part "volumes") $mounted (or $tls.caKey $tls.certKey) }}
- name: kafka-tls
  secret:
    secretName: {{ $tls.existingSecret }}
    defaultMode: 288  # 0440: the pod's group (fsGroup) reads it, nobody writes it
    items:
      {{- with $tls.caKey }}
      - {key: {{ . | quote }}, path: ca.crt}
      {{- end }}
      {{- with $tls.certKey }}
      - {key: {{ . | quote }}, path: tls.crt}
      {{- end }}
      {{- with $tls.keyKey }}
      - {key: {{ . | quote }}, path: tls.key}
      {{- end }}
{{- else if and (eq $part "volumeMounts") $mounted (or $tls.caKey $tls.certKey) }}
- name: kafka-tls
  mountPath: {{ $dir }}
  readOnly: true
{{- end }}
{{- end }}

{{/* A worker's own secrets, one part at a time: pass (list $ name "env"|"volumes"|
"volumeMounts"). Only the notification worker has any: its SMTP password as env, and its
webhook endpoints file (whsec_ secrets) from a Secret mounted as a directory, not with
subPath, so a change to the Secret reaches the running pods (the worker re-reads it). */}}
{{- define "billing-fleet.workerSecrets" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $part := index . 2 -}}
{{- $s := $root.Values.secrets -}}
{{- $endpoints := $s.notificationWebhookEndpoints -}}
{{- if eq $name "notification" }}
{{- if eq $part "env" }}
{{- include "billing-fleet.secretEnv" (list $root "BILLING_NOTIFICATION_SMTP_PASSWORD" $s.notificationSmtpPassword) }}
{{- if $endpoints.existingSecret }}
- name: BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH
  value: /etc/billing-fleet/webhooks/endpoints.yaml
{{- end }}
{{- else if and (eq $part "volumes") $endpoints.existingSecret }}
- name: webhook-endpoints
  secret:
    secretName: {{ $endpoints.existingSecret }}
    defaultMode: 288  # 0440: the pod's group (fsGroup) reads it, nobody writes it
    items:
      - {key: {{ $endpoints.key | quote }}, path: endpoints.yaml}
{{- else if and (eq $part "volumeMounts") $endpoints.existingSecret }}
- name: webhook-endpoints
  mountPath: /etc/billing-fleet/webhooks
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
