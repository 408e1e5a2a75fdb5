{{/* Chart name. */}}
{{- define "rollkeeper.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "rollkeeper.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Common labels. */}}
{{- define "rollkeeper.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rollkeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of a component (manager or agent): pass (list $ "manager"). */}}
{{- define "rollkeeper.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "rollkeeper.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "rollkeeper.managerName" -}}
{{ include "rollkeeper.fullname" . }}-manager
{{- end }}

{{- define "rollkeeper.agentName" -}}
{{ include "rollkeeper.fullname" . }}-agent
{{- end }}

{{- define "rollkeeper.zkServers" -}}
{{- required "zookeeper.servers is required (comma-separated host:port list)" .Values.zookeeper.servers }}
{{- end }}

{{- define "rollkeeper.managerServiceAccount" -}}
{{- .Values.serviceAccount.managerName | default (include "rollkeeper.managerName" .) }}
{{- end }}

{{- define "rollkeeper.agentServiceAccount" -}}
{{- .Values.serviceAccount.agentName | default (include "rollkeeper.agentName" .) }}
{{- end }}

{{- define "rollkeeper.managerImage" -}}
{{ .Values.image.manager.repository }}:{{ .Values.image.manager.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "rollkeeper.agentImage" -}}
{{ .Values.image.agent.repository }}:{{ .Values.image.agent.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The Secret holding the ZooKeeper credentials ("" when running open). */}}
{{- define "rollkeeper.zkAuthSecret" -}}
{{- if not .Values.zookeeper.insecureAllowOpen -}}
{{- .Values.zookeeper.auth.existingSecret | default (printf "%s-zk-auth" (include "rollkeeper.fullname" .)) -}}
{{- end -}}
{{- end }}

{{/* Environment giving the operator or an agent its ZooKeeper credentials, or running it open. */}}
{{- define "rollkeeper.zkAuthEnv" -}}
{{- if include "rollkeeper.zkAuthSecret" . -}}
# ZooKeeper digest credentials, user:password, from the mounted Secret.
- name: ROLLKEEPER_ZK_AUTH_FILE
  value: /etc/rollkeeper/zk-auth/auth
{{- else -}}
# INSECURE (zookeeper.insecureAllowOpen): anyone who can reach ZooKeeper can run commands as root on the nodes.
- name: ROLLKEEPER_INSECURE_ALLOW_OPEN_ZOOKEEPER
  value: "true"
{{- end }}
{{- end }}

{{- define "rollkeeper.zkAuthMount" -}}
{{- if include "rollkeeper.zkAuthSecret" . -}}
- name: zk-auth
  mountPath: /etc/rollkeeper/zk-auth
  readOnly: true
{{- end }}
{{- end }}

{{- define "rollkeeper.zkAuthVolume" -}}
{{- if include "rollkeeper.zkAuthSecret" . -}}
- name: zk-auth
  secret:
    secretName: {{ include "rollkeeper.zkAuthSecret" . }}
    # Group-readable: the operator runs as 65532 with fsGroup 65532.
    defaultMode: 0440
    items:
      - key: {{ .Values.zookeeper.auth.key }}
        path: auth
{{- end }}
{{- end }}

{{/* TLS to ZooKeeper: environment, mount and volume (zookeeper.tls.existingSecret). */}}
{{- define "rollkeeper.zkTLSEnv" -}}
{{- with .Values.zookeeper.tls -}}
{{- if .existingSecret -}}
# TLS to ZooKeeper, files from secret/{{ .existingSecret }}.
- name: ROLLKEEPER_ZK_TLS_CA_FILE
  value: /etc/rollkeeper/zk-tls/ca.crt
{{- if .clientCertificate }}
- name: ROLLKEEPER_ZK_TLS_CERT_FILE
  value: /etc/rollkeeper/zk-tls/tls.crt
- name: ROLLKEEPER_ZK_TLS_KEY_FILE
  value: /etc/rollkeeper/zk-tls/tls.key
{{- end }}
{{- with .serverName }}
- name: ROLLKEEPER_ZK_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rollkeeper.zkTLSMount" -}}
{{- if .Values.zookeeper.tls.existingSecret -}}
- name: zk-tls
  mountPath: /etc/rollkeeper/zk-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "rollkeeper.zkTLSVolume" -}}
{{- if .Values.zookeeper.tls.existingSecret -}}
- name: zk-tls
  secret:
    secretName: {{ .Values.zookeeper.tls.existingSecret }}
    # Group-readable: the operator runs as 65532 with fsGroup 65532.
    defaultMode: 0440
{{- end }}
{{- end }}
