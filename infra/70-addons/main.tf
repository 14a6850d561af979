provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

data "terraform_remote_state" "eks" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "${var.environment}/20-eks/terraform.tfstate"
    region = coalesce(var.state_region, var.region)
  }
}

data "terraform_remote_state" "iam" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "${var.environment}/30-iam/terraform.tfstate"
    region = coalesce(var.state_region, var.region)
  }
}

locals {
  name = "${var.name}-${var.environment}"

  tags = merge(
    {
      Project     = var.name
      Environment = var.environment
      ManagedBy   = "terraform"
      Module      = "70-addons"
    },
    var.tags,
  )

  eks = data.terraform_remote_state.eks.outputs
  iam = data.terraform_remote_state.iam.outputs

  # Every chart, its repository and its pinned version, in one place.
  charts = {
    ingress_nginx = {
      repository = "https://kubernetes.github.io/ingress-nginx"
      chart      = "ingress-nginx"
      version    = "4.12.1"
      namespace  = "ingress-nginx"
    }
    external_secrets = {
      repository = "https://charts.external-secrets.io"
      chart      = "external-secrets"
      version    = "0.19.2"
      namespace  = "external-secrets"
    }
    kube_prometheus_stack = {
      repository = "https://prometheus-community.github.io/helm-charts"
      chart      = "kube-prometheus-stack"
      version    = "79.7.1"
      namespace  = "monitoring"
    }
    jaeger = {
      repository = "https://jaegertracing.github.io/helm-charts"
      chart      = "jaeger"
      version    = "3.4.1"
      namespace  = "observability"
    }
    metrics_server = {
      repository = "https://kubernetes-sigs.github.io/metrics-server/"
      chart      = "metrics-server"
      version    = "3.12.2"
      namespace  = "kube-system"
    }
    cert_manager = {
      repository = "https://charts.jetstack.io"
      chart      = "cert-manager"
      version    = "v1.16.2"
      namespace  = "cert-manager"
    }
  }
}

# The API endpoint is private by default: run this module from inside the VPC (a bastion, a VPN,
# a runner in the private subnets) or with 20-eks's public endpoint allow-listed for the runner.
data "aws_eks_cluster_auth" "this" {
  name = local.eks.cluster_name
}

provider "kubernetes" {
  host                   = local.eks.cluster_endpoint
  cluster_ca_certificate = base64decode(local.eks.cluster_certificate_authority_data)
  token                  = data.aws_eks_cluster_auth.this.token
}

provider "helm" {
  kubernetes {
    host                   = local.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(local.eks.cluster_certificate_authority_data)
    token                  = data.aws_eks_cluster_auth.this.token
  }
}

################################################################################
# mercato's namespace (Pod Security "restricted"), and what its deployer may do there beyond
# the EKS access policy
################################################################################

resource "kubernetes_namespace_v1" "mercato" {
  metadata {
    name = local.iam.kubernetes_namespace

    labels = {
      "pod-security.kubernetes.io/enforce"         = "restricted"
      "pod-security.kubernetes.io/enforce-version" = "latest"
      "pod-security.kubernetes.io/audit"           = "restricted"
      "pod-security.kubernetes.io/warn"            = "restricted"
    }
  }
}

# EKS access policies cover Kubernetes' own kinds only; the chart also makes the External
# Secrets Operator's SecretStore and ExternalSecret and, when asked, a ServiceMonitor.
resource "kubernetes_role_v1" "deployer_custom_resources" {
  metadata {
    name      = "mercato-deployer-custom-resources"
    namespace = kubernetes_namespace_v1.mercato.metadata[0].name
  }

  rule {
    api_groups = ["external-secrets.io"]
    resources  = ["secretstores", "externalsecrets"]
    verbs      = ["get", "list", "watch", "create", "update", "patch", "delete"]
  }

  rule {
    api_groups = ["monitoring.coreos.com"]
    resources  = ["servicemonitors", "podmonitors", "prometheusrules"]
    verbs      = ["get", "list", "watch", "create", "update", "patch", "delete"]
  }
}

resource "kubernetes_role_binding_v1" "deployer_custom_resources" {
  metadata {
    name      = "mercato-deployer-custom-resources"
    namespace = kubernetes_namespace_v1.mercato.metadata[0].name
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.deployer_custom_resources.metadata[0].name
  }

  subject {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Group"
    name      = local.iam.deployer_kubernetes_group
  }
}

################################################################################
# Default StorageClass: gp3, encrypted with 20-eks's EBS key
################################################################################

resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name = var.storage_class_name

    annotations = {
      "storageclass.kubernetes.io/is-default-class" = "true"
    }
  }

  storage_provisioner    = "ebs.csi.aws.com"
  reclaim_policy         = "Retain"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true

  parameters = {
    type      = "gp3"
    encrypted = "true"
    kmsKeyId  = local.eks.ebs_kms_key_arn
  }
}

################################################################################
# Charts
################################################################################

# The one public entry point: a Network Load Balancer in the public subnets.
resource "helm_release" "ingress_nginx" {
  name             = "ingress-nginx"
  repository       = local.charts.ingress_nginx.repository
  chart            = local.charts.ingress_nginx.chart
  version          = local.charts.ingress_nginx.version
  namespace        = local.charts.ingress_nginx.namespace
  create_namespace = true
  atomic           = true
  timeout          = 600

  values = [file("${path.module}/values/ingress-nginx.yaml")]

  set {
    name  = "controller.replicaCount"
    value = var.ingress_nginx_replicas
  }

  set_list {
    name  = "controller.service.loadBalancerSourceRanges"
    value = var.ingress_source_ranges
  }
}

# The operator and its CRDs (SecretStore, ExternalSecret), which the mercato chart's objects need.
resource "helm_release" "external_secrets" {
  name             = "external-secrets"
  repository       = local.charts.external_secrets.repository
  chart            = local.charts.external_secrets.chart
  version          = local.charts.external_secrets.version
  namespace        = local.charts.external_secrets.namespace
  create_namespace = true
  atomic           = true
  timeout          = 600

  values = [file("${path.module}/values/external-secrets.yaml")]
}

resource "random_password" "grafana" {
  length  = 32
  special = false
}

resource "helm_release" "kube_prometheus_stack" {
  name             = "kube-prometheus-stack"
  repository       = local.charts.kube_prometheus_stack.repository
  chart            = local.charts.kube_prometheus_stack.chart
  version          = local.charts.kube_prometheus_stack.version
  namespace        = local.charts.kube_prometheus_stack.namespace
  create_namespace = true
  atomic           = true
  timeout          = 900

  values = [file("${path.module}/values/kube-prometheus-stack.yaml")]

  set {
    name  = "prometheus.prometheusSpec.retention"
    value = var.prometheus_retention
  }

  set {
    name  = "prometheus.prometheusSpec.storageSpec.volumeClaimTemplate.spec.storageClassName"
    value = kubernetes_storage_class_v1.gp3.metadata[0].name
  }

  set {
    name  = "prometheus.prometheusSpec.storageSpec.volumeClaimTemplate.spec.resources.requests.storage"
    value = "${var.prometheus_storage_gb}Gi"
  }

  set_sensitive {
    name  = "grafana.adminPassword"
    value = random_password.grafana.result
  }
}

# Traces: mercato exports OTLP over gRPC to jaeger-collector.observability:4317
# (OTEL_EXPORTER_OTLP_ENDPOINT in the chart's values).
resource "helm_release" "jaeger" {
  name             = "jaeger"
  repository       = local.charts.jaeger.repository
  chart            = local.charts.jaeger.chart
  version          = local.charts.jaeger.version
  namespace        = local.charts.jaeger.namespace
  create_namespace = true
  atomic           = true
  timeout          = 600

  values = [file("${path.module}/values/jaeger.yaml")]
}

# The HorizontalPodAutoscalers of the mercato chart read CPU through the metrics API.
resource "helm_release" "metrics_server" {
  name       = "metrics-server"
  repository = local.charts.metrics_server.repository
  chart      = local.charts.metrics_server.chart
  version    = local.charts.metrics_server.version
  namespace  = local.charts.metrics_server.namespace
  atomic     = true
  timeout    = 600

  values = [file("${path.module}/values/metrics-server.yaml")]
}

# Certificates of the chart's Ingress (annotation cert-manager.io/cluster-issuer: letsencrypt).
resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = local.charts.cert_manager.repository
  chart            = local.charts.cert_manager.chart
  version          = local.charts.cert_manager.version
  namespace        = local.charts.cert_manager.namespace
  create_namespace = true
  atomic           = true
  timeout          = 600

  values = [file("${path.module}/values/cert-manager.yaml")]
}

# The ClusterIssuer is a custom resource whose CRD cert-manager installs: a local chart applies
# it after cert-manager, where a kubernetes_manifest would need the CRD already at plan time.
resource "helm_release" "cluster_issuer" {
  count = var.letsencrypt_email == null ? 0 : 1

  name      = "letsencrypt-issuer"
  chart     = "${path.module}/charts/cluster-issuer"
  namespace = local.charts.cert_manager.namespace
  atomic    = true

  set {
    name  = "email"
    value = var.letsencrypt_email
  }

  set {
    name  = "server"
    value = var.letsencrypt_server
  }

  depends_on = [helm_release.cert_manager, helm_release.ingress_nginx]
}

data "kubernetes_service_v1" "ingress" {
  metadata {
    name      = "ingress-nginx-controller"
    namespace = local.charts.ingress_nginx.namespace
  }

  depends_on = [helm_release.ingress_nginx]
}
