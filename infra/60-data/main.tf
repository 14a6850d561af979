provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "terraform_remote_state" "network" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "${var.environment}/10-network/terraform.tfstate"
    region = coalesce(var.state_region, var.region)
  }
}

data "terraform_remote_state" "eks" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "${var.environment}/20-eks/terraform.tfstate"
    region = coalesce(var.state_region, var.region)
  }
}

data "terraform_remote_state" "iam" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "${var.environment}/30-iam/terraform.tfstate"
    region = coalesce(var.state_region, var.region)
  }
}

locals {
  name       = "${var.name}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  tags = merge(
    {
      Project     = var.name
      Environment = var.environment
      ManagedBy   = "terraform"
      Module      = "60-data"
    },
    var.tags,
  )

  network = data.terraform_remote_state.network.outputs
  eks     = data.terraform_remote_state.eks.outputs
  iam     = data.terraform_remote_state.iam.outputs

  node_security_group_id = local.eks.node_security_group_id
}

################################################################################
# KMS key: data at rest of RDS, ElastiCache and OpenSearch, Performance Insights, logs
################################################################################

resource "aws_kms_key" "data" {
  description             = "${local.name}: PostgreSQL, Redis and OpenSearch data at rest, Performance Insights and their logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKeyThroughIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsOfThisAccount"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "data" {
  name          = "alias/${local.name}-data"
  target_key_id = aws_kms_key.data.key_id
}

################################################################################
# Security groups: each service admits only the EKS nodes (and their pods), on its port
################################################################################

resource "aws_security_group" "this" {
  for_each = {
    postgres   = { port = 5432, what = "PostgreSQL" }
    redis      = { port = 6379, what = "Redis (TLS)" }
    opensearch = { port = 443, what = "OpenSearch (HTTPS)" }
  }

  name        = "${local.name}-${each.key}"
  description = "${each.value.what}: from the EKS nodes only"
  vpc_id      = local.network.vpc_id

  tags = {
    Name = "${local.name}-${each.key}"
  }
}

resource "aws_vpc_security_group_ingress_rule" "from_nodes" {
  for_each = {
    postgres   = 5432
    redis      = 6379
    opensearch = 443
  }

  security_group_id            = aws_security_group.this[each.key].id
  description                  = "${each.key} from the EKS nodes and pods"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = local.node_security_group_id
}
