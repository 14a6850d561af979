output "db_address" {
  description = "Host name of the PostgreSQL instance."
  value       = aws_db_instance.this.address
}

output "db_port" {
  description = "Port of the PostgreSQL instance."
  value       = aws_db_instance.this.port
}

output "db_instance_identifier" {
  description = "Identifier of the RDS instance."
  value       = aws_db_instance.this.identifier
}

output "db_resource_id" {
  description = "Resource ID of the RDS instance (for rds-db:connect IAM policies)."
  value       = aws_db_instance.this.resource_id
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the Redis replication group."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "redis_reader_endpoint" {
  description = "Reader endpoint of the Redis replication group."
  value       = aws_elasticache_replication_group.this.reader_endpoint_address
}

output "opensearch_endpoint" {
  description = "VPC endpoint of the OpenSearch domain (HTTPS, port 443)."
  value       = aws_opensearch_domain.this.endpoint
}

output "opensearch_dashboards_endpoint" {
  description = "OpenSearch Dashboards of the domain (reachable from inside the VPC)."
  value       = aws_opensearch_domain.this.dashboard_endpoint
}

output "opensearch_domain_arn" {
  description = "ARN of the OpenSearch domain."
  value       = aws_opensearch_domain.this.arn
}

output "database_secret_arn" {
  description = "ARN of mercato/<environment>/database (key url: DATABASE_URL)."
  value       = aws_secretsmanager_secret.url["database"].arn
}

output "redis_secret_arn" {
  description = "ARN of mercato/<environment>/redis (key url: REDIS_URL)."
  value       = aws_secretsmanager_secret.url["redis"].arn
}

output "opensearch_secret_arn" {
  description = "ARN of mercato/<environment>/opensearch (key url: OPENSEARCH_URL)."
  value       = aws_secretsmanager_secret.url["opensearch"].arn
}

output "app_secret_arn" {
  description = "ARN of mercato/<environment>/app (no value until put by hand)."
  value       = aws_secretsmanager_secret.app.arn
}

output "secret_names" {
  description = "Names of the secrets this module made, by purpose."
  value = {
    database   = aws_secretsmanager_secret.url["database"].name
    redis      = aws_secretsmanager_secret.url["redis"].name
    opensearch = aws_secretsmanager_secret.url["opensearch"].name
    app        = aws_secretsmanager_secret.app.name
  }
}

output "security_group_ids" {
  description = "Security groups of the services (postgres, redis, opensearch)."
  value       = { for k, sg in aws_security_group.this : k => sg.id }
}

output "kms_key_arn" {
  description = "ARN of the KMS key of the data at rest."
  value       = aws_kms_key.data.arn
}
