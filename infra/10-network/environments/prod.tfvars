environment = "prod"
region      = "eu-west-1"

# deploy/helm/mercato/values/prod.yaml's egress CIDRs and MERCATO_TRUSTED_PROXIES.
vpc_cidr           = "10.30.0.0/16"
single_nat_gateway = false

tags = {
  CostCenter = "mercato-prod"
}
