################################################################################
# OpenSearch 2.x in the VPC, fine-grained access control with an internal master user
################################################################################

locals {
  opensearch_domain   = "${local.name}-search"
  opensearch_az_count = min(var.opensearch_instance_count, length(local.network.private_subnet_ids), 3)
  opensearch_log_types = {
    AUDIT_LOGS          = "audit"
    INDEX_SLOW_LOGS     = "index-slow"
    SEARCH_SLOW_LOGS    = "search-slow"
    ES_APPLICATION_LOGS = "application"
  }
}

# The master password must have an upper-case letter, a lower-case letter, a digit and a
# special character; the URL in the secret percent-encodes it.
resource "random_password" "opensearch" {
  length           = 40
  special          = true
  override_special = "!*-_"
  min_upper        = 2
  min_lower        = 2
  min_numeric      = 2
  min_special      = 2
}

resource "aws_iam_service_linked_role" "opensearch" {
  count = var.create_opensearch_service_linked_role ? 1 : 0

  aws_service_name = "opensearchservice.amazonaws.com"
  description      = "Lets OpenSearch Service place domains in the VPC"
}

resource "aws_cloudwatch_log_group" "opensearch" {
  for_each = local.opensearch_log_types

  name              = "/aws/opensearch/${local.opensearch_domain}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
}

data "aws_iam_policy_document" "opensearch_logs" {
  statement {
    sid       = "OpenSearchWritesItsLogGroups"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for g in aws_cloudwatch_log_group.opensearch : "${g.arn}:*"]

    principals {
      type        = "Service"
      identifiers = ["es.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_cloudwatch_log_resource_policy" "opensearch" {
  policy_name     = "${local.opensearch_domain}-logs"
  policy_document = data.aws_iam_policy_document.opensearch_logs.json
}

# With fine-grained access control and HTTP basic authentication against the internal user
# database, requests are not signed: the domain policy must let any principal reach the domain
# (it is only reachable inside the VPC, through a security group that admits only the EKS
# nodes), and the security plugin then authenticates and authorises every request.
data "aws_iam_policy_document" "opensearch_access" {
  #checkov:skip=CKV_AWS_283:HTTP basic authentication against fine-grained access control's internal users sends unsigned requests, which only a policy open to any principal lets through; the domain is VPC-only behind a security group admitting only the EKS nodes (IP conditions do not apply to VPC domains), and the security plugin authenticates every request.
  statement {
    sid       = "FineGrainedAccessControlDecides"
    actions   = ["es:ESHttp*"]
    resources = ["arn:${local.partition}:es:${var.region}:${local.account_id}:domain/${local.opensearch_domain}/*"]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
  }
}

resource "aws_opensearch_domain" "this" {
  domain_name    = local.opensearch_domain
  engine_version = var.opensearch_engine_version

  cluster_config {
    instance_type          = var.opensearch_instance_type
    instance_count         = var.opensearch_instance_count
    zone_awareness_enabled = local.opensearch_az_count > 1

    dynamic "zone_awareness_config" {
      for_each = local.opensearch_az_count > 1 ? [1] : []

      content {
        availability_zone_count = local.opensearch_az_count
      }
    }

    dedicated_master_enabled = var.opensearch_dedicated_master
    dedicated_master_type    = var.opensearch_dedicated_master ? var.opensearch_master_instance_type : null
    dedicated_master_count   = var.opensearch_dedicated_master ? 3 : null
  }

  vpc_options {
    subnet_ids         = slice(local.network.private_subnet_ids, 0, local.opensearch_az_count)
    security_group_ids = [aws_security_group.this["opensearch"].id]
  }

  ebs_options {
    ebs_enabled = true
    volume_type = "gp3"
    volume_size = var.opensearch_volume_size_gb
  }

  encrypt_at_rest {
    enabled    = true
    kms_key_id = aws_kms_key.data.arn
  }

  node_to_node_encryption {
    enabled = true
  }

  domain_endpoint_options {
    enforce_https       = true
    tls_security_policy = "Policy-Min-TLS-1-2-2019-07"
  }

  advanced_security_options {
    enabled                        = true
    anonymous_auth_enabled         = false
    internal_user_database_enabled = true

    master_user_options {
      master_user_name     = var.opensearch_master_user
      master_user_password = random_password.opensearch.result
    }
  }

  log_publishing_options {
    log_type                 = "AUDIT_LOGS"
    cloudwatch_log_group_arn = aws_cloudwatch_log_group.opensearch["AUDIT_LOGS"].arn
    enabled                  = true
  }

  log_publishing_options {
    log_type                 = "INDEX_SLOW_LOGS"
    cloudwatch_log_group_arn = aws_cloudwatch_log_group.opensearch["INDEX_SLOW_LOGS"].arn
    enabled                  = true
  }

  log_publishing_options {
    log_type                 = "SEARCH_SLOW_LOGS"
    cloudwatch_log_group_arn = aws_cloudwatch_log_group.opensearch["SEARCH_SLOW_LOGS"].arn
    enabled                  = true
  }

  log_publishing_options {
    log_type                 = "ES_APPLICATION_LOGS"
    cloudwatch_log_group_arn = aws_cloudwatch_log_group.opensearch["ES_APPLICATION_LOGS"].arn
    enabled                  = true
  }

  access_policies = data.aws_iam_policy_document.opensearch_access.json

  depends_on = [
    aws_iam_service_linked_role.opensearch,
    aws_cloudwatch_log_resource_policy.opensearch,
  ]
}
