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
  description = "Environment whose state this backend holds (dev, staging or prod); part of every name."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "region" {
  description = "AWS region of the state bucket, lock table and key."
  type        = string
  default     = "eu-west-1"
}

variable "tags" {
  description = "Tags added to every resource, merged over the module's default tags (Project, Environment, ManagedBy, Module)."
  type        = map(string)
  default     = {}
}

variable "state_bucket_name" {
  description = "Name of the state bucket; null derives \"<name>-<environment>-tfstate-<account id>\", which is globally unique."
  type        = string
  default     = null

  validation {
    condition     = var.state_bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.state_bucket_name))
    error_message = "state_bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)."
  }
}

variable "state_admin_principal_arns" {
  description = "IAM principal ARNs (roles or users; wildcards allowed) that alone may use the state bucket. Empty leaves access to IAM policies in the account; non-empty adds a bucket-policy Deny for every other principal."
  type        = list(string)
  default     = []
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted state version is kept before it expires (the history to roll back to)."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_retention_days >= 7
    error_message = "Keep replaced state versions for at least 7 days."
  }
}

variable "access_log_retention_days" {
  description = "Days the server access logs of the state bucket are kept."
  type        = number
  default     = 365

  validation {
    condition     = var.access_log_retention_days >= 30
    error_message = "Keep access logs for at least 30 days."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the state KMS key is deleted after it is scheduled for deletion."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be 7 to 30."
  }
}
