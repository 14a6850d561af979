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

variable "kafka_version" {
  description = "Apache Kafka version of the MSK cluster."
  type        = string
  default     = "3.6.0"
}

variable "broker_instance_type" {
  description = "MSK broker instance type."
  type        = string
  default     = "kafka.m5.large"

  validation {
    condition     = startswith(var.broker_instance_type, "kafka.")
    error_message = "broker_instance_type must be an MSK instance type (kafka.*)."
  }
}

variable "broker_count" {
  description = "Number of brokers: a multiple of the number of private subnets (one per AZ), at least 3 so that replication factor 3 with min.insync.replicas 2 survives a broker's loss."
  type        = number
  default     = 3

  validation {
    condition     = var.broker_count >= 3
    error_message = "broker_count must be at least 3 (default.replication.factor=3)."
  }
}

variable "broker_volume_size_gb" {
  description = "EBS storage per broker, in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.broker_volume_size_gb >= 1 && var.broker_volume_size_gb <= 16384
    error_message = "broker_volume_size_gb must be 1 to 16384."
  }
}

variable "default_partitions" {
  description = "num.partitions of the cluster configuration (topics created without a partition count; mercato's relay passes MERCATO_KAFKA_PARTITIONS)."
  type        = number
  default     = 6
}

variable "log_retention_days" {
  description = "Days the broker logs are kept in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention period CloudWatch Logs accepts."
  }
}

variable "scram_username" {
  description = "SASL/SCRAM user name of mercato (KAFKA_SASL_USERNAME)."
  type        = string
  default     = "mercato"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,64}$", var.scram_username))
    error_message = "scram_username must be 1-64 letters, digits, '_', '.' or '-'."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can still be restored."
  type        = number
  default     = 30

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or 7 to 30."
  }
}
