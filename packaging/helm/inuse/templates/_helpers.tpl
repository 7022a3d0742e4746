{{/* Names and labels shared by every object of the chart. */}}

{{- define "inuse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "inuse.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels: stable across upgrades, so never the version. */}}
{{- define "inuse.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A tag given with --set (1, 7.2) is a number to helm: %v prints either. */}}
{{- define "inuse.image" -}}
{{- printf "%s:%v" .image.repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- define "inuse.redisName" -}}
{{- printf "%s-redis" (include "inuse.fullname" .) -}}
{{- end -}}

{{/*
INUSE_REDIS_URL for the agent and serve: the bundled Redis, an external
URL, or a key of an existing Secret. The bundled Redis has a user per role
(redis-secret.yaml); call with (dict "root" . "role" "agent"|"serve").
*/}}
{{- define "inuse.redisEnv" -}}
- name: INUSE_REDIS_URL
{{- with .root }}
{{- if .Values.redis.enabled }}
  valueFrom:
    secretKeyRef:
      name: {{ include "inuse.redisName" . }}
      key: {{ $.role }}-url
{{- else if .Values.redis.external.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.existingSecretKey }}
{{- else if .Values.redis.external.url }}
  value: {{ .Values.redis.external.url | quote }}
{{- else }}
{{- fail "redis.enabled is false: set redis.external.url or redis.external.existingSecret" }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The bundled Redis's ACL file. The agent's write patterns are its profile
keys one by one (internal/store/schema.go): a pattern cannot exclude the
plan, report and lease keys of the same image.
*/}}
{{- define "inuse.redisACL" -}}
user default off
user agent on #{{ sha256sum .agent }} resetchannels -@all +@read +@write +@keyspace +@transaction +@scripting +@connection -@dangerous -@admin ~inuse:images ~inuse:names
{{- range list "meta" "folded" "names" "containers" "nodes" "workloads" "files:*" "dirs:*" "exec" "exec_sessions" "mapped" "tcp:*" "udp:*" "syscalls" "seeded" "functions" "probed" "runtime:*" "drift" }} ~inuse:{*}:{{ . }}{{ end }} %R~inuse:{*}:goplan
user serve on #{{ sha256sum .serve }} resetchannels -@all +@read +@write +@keyspace +@transaction +@scripting +@connection -@dangerous -@admin ~*
{{ end -}}

{{- define "inuse.adminSecretName" -}}
{{- .Values.serve.admin.existingSecret | default (printf "%s-admin" (include "inuse.fullname" .)) -}}
{{- end -}}

{{/* How serve gets its certificate: a named Secret wins over serve.tls.mode. */}}
{{- define "inuse.tlsMode" -}}
{{- $tls := .Values.serve.tls -}}
{{- if $tls.secretName -}}secret
{{- else if has $tls.mode (list "self-signed" "cert-manager" "off") -}}{{ $tls.mode }}
{{- else -}}{{ fail "serve.tls.mode must be self-signed, cert-manager or off (or set serve.tls.secretName)" }}
{{- end -}}
{{- end -}}

{{- define "inuse.tlsSecretName" -}}
{{- .Values.serve.tls.secretName | default (printf "%s-tls" (include "inuse.fullname" .)) -}}
{{- end -}}
