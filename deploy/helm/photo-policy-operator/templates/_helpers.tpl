{{/* Name of the chart, or nameOverride. */}}
{{- define "ppo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else the release name
when it already contains the chart name, else "<release>-<chart>".
*/}}
{{- define "ppo.fullname" -}}
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

{{/*
Full name with a suffix such as "-metrics", the full name cut first so that
the result fits in 63 characters (Services are DNS-1035 labels). Call it
with a list: (list . "-metrics").
*/}}
{{- define "ppo.suffixedName" -}}
{{- $suffix := index . 1 }}
{{- $base := include "ppo.fullname" (index . 0) | trunc (int (sub 63 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s%s" $base $suffix }}
{{- end }}

{{- define "ppo.serviceAccountName" -}}
{{- default (include "ppo.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "ppo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ppo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ppo.labels" -}}
{{ include "ppo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "ppo.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Rules of the operator's ClusterRole, or of its Role when watchNamespace is
set. Keep them equal to deploy/kustomize/base/rbac.yaml: a test compares the
two.
*/}}
{{- define "ppo.rules" -}}
- apiGroups: ["photopolicy.io"]
  resources: ["photoupdatepolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["photopolicy.io"]
  resources: ["photoupdatepolicies/status"]
  verbs: ["get", "patch"]
{{- if and .Values.credentialsNamespace (not .Values.watchNamespace) }}
{{ include "ppo.clusterPolicyRules" . }}
{{- end }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{- /* Rules for ClusterPhotoUpdatePolicy objects, which are cluster-scoped. */}}
{{- define "ppo.clusterPolicyRules" -}}
- apiGroups: ["photopolicy.io"]
  resources: ["clusterphotoupdatepolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["photopolicy.io"]
  resources: ["clusterphotoupdatepolicies/status"]
  verbs: ["get", "patch"]
{{- end }}
