environment = "prod"
region      = "eu-west-1"

noncurrent_version_retention_days = 365

tags = {
  CostCenter = "mercato-prod"
}
