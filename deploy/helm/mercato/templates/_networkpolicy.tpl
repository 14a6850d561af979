{{/* The pieces of the NetworkPolicies (networkpolicies.yaml). */}}

{{/* An egress rule to one entry of .Values.egress: call with (dict "target" ENTRY). */}}
{{- define "mercato.egressTo" -}}
{{- $target := .target -}}
{{- if $target.namespaceSelector }}
- to:
    - namespaceSelector:
        {{- toYaml $target.namespaceSelector | nindent 8 }}
  ports:
    - {protocol: TCP, port: {{ $target.port }}}
{{- else }}
- to:
    {{- range $target.cidrs }}
    - ipBlock:
        cidr: {{ . }}
        {{- with $target.except }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    {{- end }}
  ports:
    - {protocol: TCP, port: {{ $target.port }}}
{{- end }}
{{- end -}}

{{/* DNS, from the cluster's resolver. */}}
{{- define "mercato.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{/* Prometheus scraping /metrics. */}}
{{- define "mercato.metricsIngress" -}}
{{- if .Values.metrics.scrape }}
- from:
    - namespaceSelector:
        {{- toYaml .Values.metrics.namespaceSelector | nindent 8 }}
  ports:
    - {protocol: TCP, port: 8080}
{{- end }}
{{- end -}}
