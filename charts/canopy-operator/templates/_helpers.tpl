{{/* The operator's name; the objects are named after the release unless it already says canopy-operator. */}}
{{- define "canopy-operator.fullname" -}}
{{- if contains "canopy-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-canopy-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "canopy-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Selector labels: the same as manifests/ (app.kubernetes.io/name) plus the release. */}}
{{- define "canopy-operator.selectorLabels" -}}
app.kubernetes.io/name: canopy-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "canopy-operator.labels" -}}
{{ include "canopy-operator.selectorLabels" . }}
app.kubernetes.io/part-of: canopy
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "canopy-operator.clusterScope" -}}
{{- if eq .Values.installScope "Cluster" -}}true{{- end -}}
{{- end -}}
