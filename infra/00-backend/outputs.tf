output "state_bucket_name" {
  description = "Name of the S3 bucket holding every module's state: `bucket` in each backend.hcl."
  value       = aws_s3_bucket.state.id
}

output "state_bucket_arn" {
  description = "ARN of the state bucket."
  value       = aws_s3_bucket.state.arn
}

output "log_bucket_name" {
  description = "Name of the bucket receiving the state bucket's server access logs (prefix state-access/)."
  value       = aws_s3_bucket.logs.id
}

output "lock_table_name" {
  description = "Name of the DynamoDB lock table: `dynamodb_table` in each backend.hcl."
  value       = aws_dynamodb_table.lock.name
}

output "lock_table_arn" {
  description = "ARN of the DynamoDB lock table."
  value       = aws_dynamodb_table.lock.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the state: `kms_key_id` in each backend.hcl."
  value       = aws_kms_key.state.arn
}

output "kms_key_alias" {
  description = "Alias of the state KMS key."
  value       = aws_kms_alias.state.name
}

output "region" {
  description = "Region of the backend: `region` in each backend.hcl."
  value       = var.region
}

output "backend_config" {
  description = "The shared part of every other module's backend.hcl (add `key = \"<environment>/<module>/terraform.tfstate\"`)."
  value       = <<-EOT
    bucket         = "${aws_s3_bucket.state.id}"
    region         = "${var.region}"
    dynamodb_table = "${aws_dynamodb_table.lock.name}"
    encrypt        = true
    kms_key_id     = "${aws_kms_key.state.arn}"
  EOT
}
