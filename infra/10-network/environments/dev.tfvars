environment = "dev"
region      = "eu-west-1"

# deploy/helm/mercato/values/dev.yaml's egress CIDRs and MERCATO_TRUSTED_PROXIES.
vpc_cidr           = "10.20.0.0/16"
single_nat_gateway = true

tags = {
  CostCenter = "mercato-dev"
}
