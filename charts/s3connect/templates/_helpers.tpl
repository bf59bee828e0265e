{{- define "s3connect.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "s3connect.serviceAccountName" -}}
{{ default (include "s3connect.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "s3connect.labels" -}}
app.kubernetes.io/name: s3connect
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "s3connect.selectorLabels" -}}
app.kubernetes.io/name: s3connect
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
