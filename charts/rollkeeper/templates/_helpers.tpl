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
# INSECURE (zookeeper.insecureAllowOpen): anyone who can reach ZooKeeper can write rollkeeper's tree.
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

{{/* Signed plans and releases (signing.*). */}}
{{/* The Secret holding the operator's signing key ("" with signing.insecureAllowUnsigned). */}}
{{- define "rollkeeper.signingSecret" -}}
{{- if not .Values.signing.insecureAllowUnsigned -}}
{{- .Values.signing.existingSecret | default (printf "%s-signing" (include "rollkeeper.fullname" .)) -}}
{{- end -}}
{{- end }}

{{/* The ConfigMap of trusted public keys ("" with signing.insecureAllowUnsigned). */}}
{{- define "rollkeeper.trustedKeysConfigMap" -}}
{{- if not .Values.signing.insecureAllowUnsigned -}}
{{- printf "%s-trusted-keys" (include "rollkeeper.fullname" .) -}}
{{- end -}}
{{- end }}

{{/* The operator's signing environment: its private key and the trusted public keys, or INSECURE unsigned. */}}
{{- define "rollkeeper.signingEnv" -}}
{{- if include "rollkeeper.signingSecret" . -}}
# The ed25519 key the operator signs plans, releases and deploy entries with (mounted Secret).
- name: ROLLKEEPER_SIGNING_KEY_FILE
  value: /etc/rollkeeper/signing/signing.key
{{ end -}}
{{ include "rollkeeper.trustedKeysEnv" . }}
{{- end }}

{{/* The trusted public keys (operator and agents), or INSECURE unsigned plans. */}}
{{- define "rollkeeper.trustedKeysEnv" -}}
{{- if include "rollkeeper.trustedKeysConfigMap" . -}}
# Public keys whose signatures are trusted (mounted ConfigMap; the agents re-read it when it changes).
- name: ROLLKEEPER_TRUSTED_KEYS_FILE
  value: /etc/rollkeeper/trusted-keys/trusted-keys.pem
{{- else -}}
# INSECURE (signing.insecureAllowUnsigned): whoever can write to ZooKeeper can run commands as root on the nodes.
- name: ROLLKEEPER_INSECURE_ALLOW_UNSIGNED_PLANS
  value: "true"
{{- end }}
{{- end }}

{{/* Mount and volume of the signing key: the operator's only, never the agents'. */}}
{{- define "rollkeeper.signingKeyMount" -}}
{{- if include "rollkeeper.signingSecret" . -}}
- name: signing-key
  mountPath: /etc/rollkeeper/signing
  readOnly: true
{{- end }}
{{- end }}

{{- define "rollkeeper.signingKeyVolume" -}}
{{- if include "rollkeeper.signingSecret" . -}}
# The operator's private signing key (only this key of the Secret).
- name: signing-key
  secret:
    secretName: {{ include "rollkeeper.signingSecret" . }}
    # Group-readable: the operator runs as 65532 with fsGroup 65532.
    defaultMode: 0440
    items:
      - key: signing.key
        path: signing.key
{{- end }}
{{- end }}

{{/* Mount and volume of the trusted public keys (operator and agents). A directory mount, never
subPath: the kubelet updates a ConfigMap volume in place only without subPath. */}}
{{- define "rollkeeper.trustedKeysMount" -}}
{{- if include "rollkeeper.trustedKeysConfigMap" . -}}
- name: trusted-keys
  mountPath: /etc/rollkeeper/trusted-keys
  readOnly: true
{{- end }}
{{- end }}

{{- define "rollkeeper.trustedKeysVolume" -}}
{{- if include "rollkeeper.trustedKeysConfigMap" . -}}
- name: trusted-keys
  configMap:
    name: {{ include "rollkeeper.trustedKeysConfigMap" . }}
{{- end }}
{{- end }}
