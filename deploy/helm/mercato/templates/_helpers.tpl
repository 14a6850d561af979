{{/* The chart's name, or nameOverride. */}}
{{- define "mercato.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object's name: "<release>-mercato", or the release alone when it
     already holds the chart's name, or fullnameOverride. Kept to 45 characters so that the
     longest suffix ("-command-api-migrate") still fits Kubernetes' 63. */}}
{{- define "mercato.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "mercato.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "mercato.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "mercato.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mercato
{{- end -}}

{{/* The labels that select one component's pods; call with (dict "root" $ "component" NAME). */}}
{{- define "mercato.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mercato.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: repository with the digest when one is set, else with the tag;
     call with (dict "image" IMAGE "default" TAG). */}}
{{- define "mercato.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (required "image.tag is empty and the chart has no appVersion" (default .default .image.tag)) -}}
{{- end -}}
{{- end -}}

{{/* The Secret the roles take their secret settings from. */}}
{{- define "mercato.secretName" -}}
{{- if .Values.externalSecrets.enabled -}}
{{- printf "%s-env" (include "mercato.fullname" .) -}}
{{- else -}}
{{- required "externalSecrets.enabled is false: existingSecret must name the Secret with DATABASE_URL and the other secret settings" .Values.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The roles' service account. */}}
{{- define "mercato.serviceAccountName" -}}
{{- default (include "mercato.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The pod and container security contexts of every mercato container: an unprivileged
     user (the image's uid 10001), nothing written outside the mounted volumes, no privilege to
     gain, no capability, the runtime's default seccomp profile. */}}
{{- define "mercato.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container's: call with its user and group id (mercato's image: 10001). */}}
{{- define "mercato.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The checks checkov makes that this chart does not meet, each with the reason, as
     checkov's skip annotations on the object. */}}
{{- define "mercato.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_43=The image is pinned by an immutable tag (ECR's IMMUTABLE tags, the commit's SHA); image.digest pins a digest where wanted.
checkov.io/skip2: CKV_K8S_15=With immutable tags IfNotPresent pulls the same bytes as Always, without a registry round-trip at every start; image.pullPolicy sets Always where wanted.
checkov.io/skip3: CKV_K8S_35=mercato reads its settings, secrets included, from environment variables (twelve-factor; its --config file holds no secrets); the Secret is made by the External Secrets Operator and never written in values.
{{- end -}}
