output "mercato_namespace" {
  description = "Namespace for mercato's chart (Pod Security restricted); `helm upgrade --install -n` this, without --create-namespace."
  value       = kubernetes_namespace_v1.mercato.metadata[0].name
}

output "ingress_class_name" {
  description = "IngressClass of ingress-nginx (the chart's ingress.className)."
  value       = "nginx"
}

output "ingress_load_balancer_hostname" {
  description = "DNS name of the NLB in front of ingress-nginx: point the shop's DNS records (CNAME or alias) at it. Empty until AWS has made the NLB; apply again or read the Service then."
  value       = try(data.kubernetes_service_v1.ingress.status[0].load_balancer[0].ingress[0].hostname, "")
}

output "otlp_endpoint" {
  description = "OTLP gRPC endpoint of Jaeger's collector: mercato's OTEL_EXPORTER_OTLP_ENDPOINT (with OTEL_EXPORTER_OTLP_PROTOCOL=grpc)."
  value       = "http://jaeger-collector.${local.charts.jaeger.namespace}:4317"
}

output "monitoring_namespace" {
  description = "Namespace of Prometheus and Grafana (the chart's metrics.namespaceSelector)."
  value       = local.charts.kube_prometheus_stack.namespace
}

output "grafana_admin_password" {
  description = "Password of Grafana's admin user (kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80)."
  value       = random_password.grafana.result
  sensitive   = true
}

output "storage_class_name" {
  description = "Default StorageClass (gp3, encrypted with 20-eks's EBS key)."
  value       = kubernetes_storage_class_v1.gp3.metadata[0].name
}

output "chart_versions" {
  description = "Every chart installed here and its pinned version."
  value       = { for k, c in local.charts : c.chart => c.version }
}
