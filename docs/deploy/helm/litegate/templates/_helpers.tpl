{{- define "litegate.fullname" -}}
{{ .Release.Name }}-litegate
{{- end }}

{{- define "litegate.selectorLabels" -}}
app.kubernetes.io/name: litegate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "litegate.labels" -}}
{{ include "litegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "litegate.secretName" -}}
{{- if .Values.secrets.create -}}
{{ include "litegate.fullname" . }}
{{- else -}}
{{ .Values.secrets.existingSecret }}
{{- end -}}
{{- end }}

{{- define "litegate.env" -}}
- name: LITEGATE_DB
  valueFrom:
    secretKeyRef:
      name: {{ include "litegate.secretName" . }}
      key: db-url
- name: LITEGATE_REDIS
  valueFrom:
    secretKeyRef:
      name: {{ include "litegate.secretName" . }}
      key: redis-url
- name: LITEGATE_HOME
  value: /var/lib/litegate
{{- if .Values.extraEnv }}
{{ toYaml .Values.extraEnv }}
{{- end }}
{{- end }}
