environment  = "prod"
region       = "eu-west-1"
state_bucket = "mercato-prod-tfstate-444455556666"

github_repository = "example-org/mercato"

tags = {
  CostCenter = "mercato-prod"
}
