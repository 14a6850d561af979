variable "name" {
  description = "Name prefix of the module's resources other than the repository (the product name)."
  type        = string
  default     = "mercato"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name (dev, staging or prod); part of the key alias and of the state key."
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

variable "repository_name" {
  description = "Name of the ECR repository (the workflow's ECR_REPOSITORY; 30-iam's ecr_repository_name)."
  type        = string
  default     = "mercato"

  validation {
    condition     = can(regex("^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$", var.repository_name))
    error_message = "repository_name must be a valid ECR repository name."
  }
}

variable "keep_image_count" {
  description = "Number of most recent images kept; older ones expire."
  type        = number
  default     = 50

  validation {
    condition     = var.keep_image_count >= 5
    error_message = "Keep at least 5 images (the ones running and a few to roll back to)."
  }
}

variable "untagged_expiry_days" {
  description = "Days after which an untagged image (a failed push, a superseded manifest) expires."
  type        = number
  default     = 7

  validation {
    condition     = var.untagged_expiry_days >= 1
    error_message = "untagged_expiry_days must be at least 1."
  }
}

variable "pull_principal_arns" {
  description = "IAM principal ARNs of other accounts or roles allowed to pull (for example prod's node role pulling dev's images); empty adds no repository policy."
  type        = list(string)
  default     = []
}
