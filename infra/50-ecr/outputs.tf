output "repository_name" {
  description = "Name of the repository (the workflow's ECR_REPOSITORY)."
  value       = aws_ecr_repository.this.name
}

output "repository_url" {
  description = "URL of the repository: the chart's image.repository."
  value       = aws_ecr_repository.this.repository_url
}

output "repository_arn" {
  description = "ARN of the repository."
  value       = aws_ecr_repository.this.arn
}

output "registry_id" {
  description = "Account ID of the registry."
  value       = aws_ecr_repository.this.registry_id
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the images."
  value       = aws_kms_key.ecr.arn
}
