terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.60"
    }
  }

  # Partial configuration: `terraform init -backend-config=backend.hcl` (backend.hcl.example).
  backend "s3" {}
}
