environment  = "dev"
region       = "eu-west-1"
state_bucket = "mercato-dev-tfstate-111122223333"

ingress_nginx_replicas = 1
letsencrypt_email      = "ops@example.com"
prometheus_retention   = "7d"
prometheus_storage_gb  = 20

tags = {
  CostCenter = "mercato-dev"
}
