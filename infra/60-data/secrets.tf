################################################################################
# Secrets Manager: one JSON object with key `url` per service, and the hand-filled app secret
#
# The composed URLs contain the passwords, and so does the Terraform state: 00-backend's bucket
# encrypts it with its KMS key, accepts TLS only and can be limited to named principals.
################################################################################

locals {
  database_url = format(
    "postgres://%s:%s@%s:%d/%s?sslmode=require",
    urlencode(var.db_username),
    urlencode(random_password.db.result),
    aws_db_instance.this.address,
    aws_db_instance.this.port,
    var.db_name,
  )

  redis_url = format(
    "rediss://:%s@%s:%d",
    urlencode(random_password.redis.result),
    aws_elasticache_replication_group.this.primary_endpoint_address,
    aws_elasticache_replication_group.this.port,
  )

  opensearch_url = format(
    "https://%s:%s@%s:443",
    urlencode(var.opensearch_master_user),
    urlencode(random_password.opensearch.result),
    aws_opensearch_domain.this.endpoint,
  )

  url_secrets = {
    database   = local.database_url
    redis      = local.redis_url
    opensearch = local.opensearch_url
  }
}

resource "aws_secretsmanager_secret" "url" {
  #checkov:skip=CKV2_AWS_57:The value is a URL composed by Terraform from a password it also set on the service; a rotation Lambda would change the service's password without this URL. Rotation is `terraform apply -replace=random_password.<db|redis|opensearch>` (README), which changes both at once.
  for_each = local.url_secrets

  name                    = local.iam.secret_names[each.key]
  description             = "mercato ${var.environment}: ${each.key} URL with credentials (key url)"
  kms_key_id              = local.iam.secrets_kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "url" {
  for_each = local.url_secrets

  secret_id     = aws_secretsmanager_secret.url[each.key].id
  secret_string = jsonencode({ url = each.value })
}

# Filled by operators, never by Terraform (README: aws secretsmanager put-secret-value), so that
# the SMTP password, the signing key and the Stripe keys never enter the state.
resource "aws_secretsmanager_secret" "app" {
  #checkov:skip=CKV2_AWS_57:Its values (SMTP credentials, token signing key, Stripe keys) are issued by outside parties or by the operators and are rotated there, then put here by hand; no Lambda can rotate them.
  name                    = local.iam.secret_names["app"]
  description             = "mercato ${var.environment}: SMTP_URL, MERCATO_SIGNING_KEY, STRIPE_API_KEY, STRIPE_WEBHOOK_SECRET (put by hand)"
  kms_key_id              = local.iam.secrets_kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
}
