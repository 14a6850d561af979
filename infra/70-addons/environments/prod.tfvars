environment  = "prod"
region       = "eu-west-1"
state_bucket = "mercato-prod-tfstate-444455556666"

ingress_nginx_replicas = 3
letsencrypt_email      = "ops@example.com"
prometheus_retention   = "30d"
prometheus_storage_gb  = 200

tags = {
  CostCenter = "mercato-prod"
}
