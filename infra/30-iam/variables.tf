variable "name" {
  description = "Name prefix of every resource (the product name)."
  type        = string
  default     = "mercato"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name (dev, staging or prod); part of every name and of the remote-state keys read."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "tags" {
  description = "Tags added to every resource, merged over the module's default tags (Project, Environment, ManagedBy, Module)."
  type        = map(string)
  default     = {}
}

variable "state_bucket" {
  description = "S3 bucket holding the other modules' state (00-backend's state_bucket_name), read through terraform_remote_state."
  type        = string
}

variable "state_region" {
  description = "Region of the state bucket; null means var.region."
  type        = string
  default     = null
}

variable "github_repository" {
  description = "GitHub repository (owner/name) whose workflows may assume the deploy role."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "github_environment" {
  description = "GitHub Actions environment whose jobs may assume the deploy role (sub claim repo:<repository>:environment:<this>); null means var.environment."
  type        = string
  default     = null
}

variable "create_github_oidc_provider" {
  description = "Whether to create the account's GitHub Actions OIDC provider; false looks up the existing one (an account has only one per URL, so the second environment in a shared account sets false)."
  type        = bool
  default     = true
}

variable "ecr_repository_name" {
  description = "Name of the ECR repository the deploy role pushes to (50-ecr's repository_name)."
  type        = string
  default     = "mercato"
}

variable "kubernetes_namespace" {
  description = "Namespace mercato is deployed into: the deploy role's access scope and the secrets service account's namespace."
  type        = string
  default     = "mercato"
}

variable "secrets_service_account" {
  description = "Kubernetes service account the External Secrets Operator reads Secrets Manager as (the chart's externalSecrets.secretStore.serviceAccount.name)."
  type        = string
  default     = "mercato-secrets"
}

variable "deployer_kubernetes_group" {
  description = "Kubernetes group the deploy role is mapped to; 70-addons binds it to the custom resources (ExternalSecret, SecretStore, ServiceMonitor) that EKS access policies do not cover."
  type        = string
  default     = "mercato-deployers"
}

variable "deploy_access_policy" {
  description = "EKS access policy of the deploy role, scoped to kubernetes_namespace: AmazonEKSEditPolicy or AmazonEKSAdminPolicy."
  type        = string
  default     = "AmazonEKSEditPolicy"

  validation {
    condition     = contains(["AmazonEKSEditPolicy", "AmazonEKSAdminPolicy"], var.deploy_access_policy)
    error_message = "deploy_access_policy must be AmazonEKSEditPolicy or AmazonEKSAdminPolicy."
  }
}

variable "max_session_duration" {
  description = "Maximum session length of the deploy role, in seconds."
  type        = number
  default     = 3600

  validation {
    condition     = var.max_session_duration >= 900 && var.max_session_duration <= 43200
    error_message = "max_session_duration must be 900 to 43200 seconds."
  }
}
