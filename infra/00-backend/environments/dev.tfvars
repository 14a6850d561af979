environment = "dev"
region      = "eu-west-1"

tags = {
  CostCenter = "mercato-dev"
}
