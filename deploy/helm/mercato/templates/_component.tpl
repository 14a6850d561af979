{{/* What every component (each role, and the gateway) has beside its Deployment, named
     "<fullname>-<component>": call each with (dict "root" $ "component" NAME ...). */}}

{{/* The metadata of a component's object. */}}
{{- define "mercato.componentMetadata" -}}
name: {{ include "mercato.fullname" .root }}-{{ .component }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "mercato.labels" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Its Service: port 8080, for the gateway (the APIs and the console) and for Prometheus. */}}
{{- define "mercato.service" -}}
apiVersion: v1
kind: Service
metadata:
  {{- include "mercato.componentMetadata" . | nindent 2 }}
spec:
  type: ClusterIP
  selector:
    {{- include "mercato.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: 8080
      targetPort: http
      protocol: TCP
{{- end -}}

{{/* Its HorizontalPodAutoscaler by CPU, when .autoscaling is enabled; nothing otherwise. */}}
{{- define "mercato.autoscaler" -}}
{{- if and .autoscaling .autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  {{- include "mercato.componentMetadata" . | nindent 2 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "mercato.fullname" .root }}-{{ .component }}
  minReplicas: {{ .autoscaling.minReplicas }}
  maxReplicas: {{ .autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}

{{/* Its PodDisruptionBudget (.pdb: maxUnavailable or minAvailable), when it has one. An unready
     pod (a lagging projector, say) may still be evicted: a node drain is not held up by pods
     that serve nothing. */}}
{{- define "mercato.budget" -}}
{{- with .pdb }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  {{- include "mercato.componentMetadata" $ | nindent 2 }}
spec:
  {{- toYaml . | nindent 2 }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "mercato.selectorLabels" $ | nindent 6 }}
{{- end }}
{{- end -}}
