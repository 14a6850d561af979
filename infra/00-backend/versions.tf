terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.60"
    }
  }

  # This module keeps its own state in a local file (terraform.tfstate) until the bucket it
  # creates exists. To move it into that bucket afterwards, uncomment the block below and run
  # `terraform init -migrate-state -backend-config=backend.hcl` (README.md, "Migrating this
  # module's own state").
  #
  # backend "s3" {}
}
