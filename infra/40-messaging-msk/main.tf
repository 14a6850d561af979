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
      Module      = "40-messaging-msk"
    },
    var.tags,
  )

  network = data.terraform_remote_state.network.outputs
  eks     = data.terraform_remote_state.eks.outputs
  iam     = data.terraform_remote_state.iam.outputs

  # Port of the SASL/SCRAM listener over TLS inside the VPC.
  scram_port = 9096
}

################################################################################
# KMS key: data at rest and broker logs
################################################################################

resource "aws_kms_key" "msk" {
  description             = "${local.name}: MSK data at rest and broker logs"
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

resource "aws_kms_alias" "msk" {
  name          = "alias/${local.name}-msk"
  target_key_id = aws_kms_key.msk.key_id
}

resource "aws_cloudwatch_log_group" "broker" {
  name              = "/aws/msk/${local.name}/broker"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.msk.arn
}

################################################################################
# Security group: SASL/SCRAM over TLS from the EKS nodes only
################################################################################

resource "aws_security_group" "msk" {
  name        = "${local.name}-msk"
  description = "MSK brokers: SASL/SCRAM over TLS from the EKS nodes only"
  vpc_id      = local.network.vpc_id

  tags = {
    Name = "${local.name}-msk"
  }
}

resource "aws_vpc_security_group_ingress_rule" "msk_from_nodes" {
  security_group_id            = aws_security_group.msk.id
  description                  = "Kafka SASL/SCRAM over TLS from the EKS nodes and pods"
  ip_protocol                  = "tcp"
  from_port                    = local.scram_port
  to_port                      = local.scram_port
  referenced_security_group_id = local.eks.node_security_group_id
}

################################################################################
# Cluster
################################################################################

resource "aws_msk_configuration" "this" {
  name           = "${local.name}-kafka-${replace(var.kafka_version, ".", "-")}"
  kafka_versions = [var.kafka_version]
  description    = "mercato: no automatic topics, replication factor 3, two in-sync replicas per write"

  server_properties = <<-PROPERTIES
    auto.create.topics.enable=false
    default.replication.factor=3
    min.insync.replicas=2
    num.partitions=${var.default_partitions}
    unclean.leader.election.enable=false
    delete.topic.enable=true
  PROPERTIES

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_msk_cluster" "this" {
  cluster_name           = local.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = var.broker_count
  enhanced_monitoring    = "PER_TOPIC_PER_BROKER"

  broker_node_group_info {
    instance_type   = var.broker_instance_type
    client_subnets  = local.network.private_subnet_ids
    security_groups = [aws_security_group.msk.id]

    storage_info {
      ebs_storage_info {
        volume_size = var.broker_volume_size_gb
      }
    }

    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  client_authentication {
    unauthenticated = false

    sasl {
      scram = true
      iam   = false
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.msk.arn

    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.broker.name
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.broker_count % length(local.network.private_subnet_ids) == 0
      error_message = "broker_count must be a multiple of the number of private subnets (one broker per AZ at least)."
    }
  }
}

################################################################################
# SASL/SCRAM credentials (Secrets Manager, customer-managed key, AmazonMSK_ prefix)
################################################################################

resource "random_password" "scram" {
  length  = 40
  special = false
}

resource "aws_secretsmanager_secret" "scram" {
  #checkov:skip=CKV2_AWS_57:MSK reads SCRAM users from this secret and has no rotation Lambda of its own; rotating means a new password put here, MSK's periodic sync, then the pods' restart, which `terraform apply -replace=random_password.scram` does in one step (README).
  name                    = local.iam.secret_names["msk_scram"]
  description             = "SASL/SCRAM user of mercato on the ${local.name} MSK cluster (keys username, password)"
  kms_key_id              = local.iam.secrets_kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "scram" {
  secret_id = aws_secretsmanager_secret.scram.id
  secret_string = jsonencode({
    username = var.scram_username
    password = random_password.scram.result
  })
}

# MSK attaches its own resource policy to the secret when it is associated: none is set here.
resource "aws_msk_scram_secret_association" "this" {
  cluster_arn     = aws_msk_cluster.this.arn
  secret_arn_list = [aws_secretsmanager_secret.scram.arn]

  depends_on = [aws_secretsmanager_secret_version.scram]
}

################################################################################
# mercato/<environment>/kafka: the bootstrap brokers for KAFKA_BOOTSTRAP
################################################################################

resource "aws_secretsmanager_secret" "kafka" {
  #checkov:skip=CKV2_AWS_57:The value is the cluster's broker list, not a credential; it changes only when the cluster does, and Terraform rewrites it then.
  name                    = local.iam.secret_names["kafka"]
  description             = "Bootstrap brokers (SASL/SCRAM over TLS) of the ${local.name} MSK cluster (key bootstrap)"
  kms_key_id              = local.iam.secrets_kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "kafka" {
  secret_id = aws_secretsmanager_secret.kafka.id
  secret_string = jsonencode({
    bootstrap = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
  })
}
