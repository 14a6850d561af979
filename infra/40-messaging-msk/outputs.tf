output "cluster_arn" {
  description = "ARN of the MSK cluster."
  value       = aws_msk_cluster.this.arn
}

output "cluster_name" {
  description = "Name of the MSK cluster."
  value       = aws_msk_cluster.this.cluster_name
}

output "bootstrap_brokers_sasl_scram" {
  description = "Bootstrap brokers of the SASL/SCRAM-over-TLS listener (host:9096,...): KAFKA_BOOTSTRAP, also in the kafka secret."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
}

output "scram_secret_arn" {
  description = "ARN of the AmazonMSK_ secret with the SCRAM user (keys username, password): KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD."
  value       = aws_secretsmanager_secret.scram.arn
}

output "scram_secret_name" {
  description = "Name of the AmazonMSK_ secret with the SCRAM user."
  value       = aws_secretsmanager_secret.scram.name
}

output "kafka_secret_arn" {
  description = "ARN of the secret mercato/<environment>/kafka (key bootstrap)."
  value       = aws_secretsmanager_secret.kafka.arn
}

output "kafka_secret_name" {
  description = "Name of the secret with the bootstrap brokers."
  value       = aws_secretsmanager_secret.kafka.name
}

output "security_group_id" {
  description = "ID of the brokers' security group."
  value       = aws_security_group.msk.id
}

output "kms_key_arn" {
  description = "ARN of the KMS key of the brokers' data at rest and logs."
  value       = aws_kms_key.msk.arn
}

output "kafka_settings" {
  description = "The non-secret Kafka settings mercato needs with this cluster (the chart's config)."
  value = {
    KAFKA_SECURITY_PROTOCOL   = "SASL_SSL"
    KAFKA_SASL_MECHANISM      = "SCRAM-SHA-512"
    MERCATO_KAFKA_PARTITIONS  = tostring(var.default_partitions)
    MERCATO_KAFKA_REPLICATION = "3"
  }
}
