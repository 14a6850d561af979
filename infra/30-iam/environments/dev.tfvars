environment  = "dev"
region       = "eu-west-1"
state_bucket = "mercato-dev-tfstate-111122223333"

github_repository = "example-org/mercato"

tags = {
  CostCenter = "mercato-dev"
}
