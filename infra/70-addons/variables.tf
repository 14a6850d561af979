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

variable "ingress_nginx_replicas" {
  description = "Replicas of the ingress-nginx controller."
  type        = number
  default     = 2
}

variable "ingress_source_ranges" {
  description = "Client CIDR blocks the public NLB of ingress-nginx accepts (loadBalancerSourceRanges); the default is everyone, as for a shop."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.ingress_source_ranges : can(cidrhost(c, 0))])
    error_message = "ingress_source_ranges must be CIDR blocks."
  }
}

variable "letsencrypt_email" {
  description = "Contact address of the Let's Encrypt account of the ClusterIssuer \"letsencrypt\" the chart's Ingress names; null installs cert-manager without that issuer."
  type        = string
  default     = null
}

variable "letsencrypt_server" {
  description = "ACME directory of the ClusterIssuer (Let's Encrypt's production one, or its staging one for trials)."
  type        = string
  default     = "https://acme-v02.api.letsencrypt.org/directory"
}

variable "prometheus_retention" {
  description = "How long Prometheus keeps samples (a Prometheus duration such as 15d)."
  type        = string
  default     = "15d"

  validation {
    condition     = can(regex("^[0-9]+[smhdwy]$", var.prometheus_retention))
    error_message = "prometheus_retention must be a duration such as 15d."
  }
}

variable "prometheus_storage_gb" {
  description = "Size of Prometheus's persistent volume (gp3, encrypted), in GiB."
  type        = number
  default     = 50
}

variable "storage_class_name" {
  description = "Name of the default StorageClass this module makes (gp3, encrypted with 20-eks's EBS key)."
  type        = string
  default     = "gp3-encrypted"
}
