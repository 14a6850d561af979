output "github_actions_role_arn" {
  description = "ARN of the role GitHub Actions assumes (the workflow's AWS_ROLE_ARN)."
  value       = aws_iam_role.github_actions.arn
}

output "secrets_role_arn" {
  description = "ARN of the IRSA role of mercato's secrets: the chart's externalSecrets.secretStore.serviceAccount.roleArn (annotation eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.secrets.arn
}

output "secrets_kms_key_arn" {
  description = "ARN of the KMS key that encrypts every mercato secret (40-messaging-msk and 60-data use it)."
  value       = aws_kms_key.secrets.arn
}

output "secret_names" {
  description = "Names of mercato's Secrets Manager secrets by purpose (database, redis, opensearch, kafka, app, msk_scram); 40-messaging-msk and 60-data create them under these names."
  value       = local.secret_names
}

output "github_oidc_provider_arn" {
  description = "ARN of the account's GitHub Actions OIDC provider."
  value       = local.github_oidc_arn
}

output "deployer_kubernetes_group" {
  description = "Kubernetes group of the deploy role (70-addons binds it in the mercato namespace)."
  value       = var.deployer_kubernetes_group
}

output "kubernetes_namespace" {
  description = "Namespace mercato is deployed into."
  value       = var.kubernetes_namespace
}

output "ecr_repository_arn" {
  description = "ARN of the ECR repository the deploy role may push to."
  value       = local.ecr_repository_arn
}
