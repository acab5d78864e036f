{{/* Resource name: the release name unless overridden (the runbooks name both the same). */}}
{{- define "ps.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ps.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "ps.labels" -}}
helm.sh/chart: {{ include "ps.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: problemsolver
app: {{ .Values.appLabel }}
{{- end -}}

{{/* Selector shared by every track (the metrics Service selects all of them). */}}
{{- define "ps.selectorLabels" -}}
app: {{ .Values.appLabel }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
An image tag as a string. Values passed as JSON arrive as float64, so an all-digit tag set with
--set would print as 1.234567e+06; integral numbers are turned back into their digits.
*/}}
{{- define "ps.tag" -}}
{{- if kindIs "float64" . -}}{{- int64 . -}}{{- else -}}{{- toString . -}}{{- end -}}
{{- end -}}

{{- define "ps.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "ps.tag" (.Values.image.tag | default .Chart.AppVersion)) -}}
{{- end -}}

{{- define "ps.namespaceOr" -}}
{{- default .root.Release.Namespace .namespace -}}
{{- end -}}

{{/*
The container's plain environment: the chart's variables in their order, each replaced by
.Values.env when it names it, then the other .Values.env entries. A name never appears twice:
server-side apply (Helm 4's default for new installs) refuses a list item repeated under the same
key. .Values.env may not name a variable the chart reads from the Secret.
Call with (dict "env" .Values.env "defaults" (list (list NAME VALUE) ...) "secretBacked" (list NAME ...)).
*/}}
{{- define "ps.plainEnv" -}}
{{- $env := .env | default dict -}}
{{- range $name := .secretBacked }}
{{- if hasKey $env $name }}
{{- fail (printf "env.%s: the chart already reads %s from the Secret; set it there, not as a plain value" $name $name) }}
{{- end }}
{{- end }}
{{- $names := list -}}
{{- range $pair := .defaults }}
{{- $name := index $pair 0 }}
{{- $names = append $names $name }}
- name: {{ $name }}
  value: {{ ternary (index $env $name) (index $pair 1) (hasKey $env $name) | quote }}
{{- end }}
{{- range $name, $value := $env }}
{{- if not (has $name $names) }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- end -}}
