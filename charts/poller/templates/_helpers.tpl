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

{{- define "ps.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "ps.namespaceOr" -}}
{{- default .root.Release.Namespace .namespace -}}
{{- end -}}
