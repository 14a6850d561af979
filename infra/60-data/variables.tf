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

variable "log_retention_days" {
  description = "Days the PostgreSQL, Redis and OpenSearch logs are kept in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention period CloudWatch Logs accepts."
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

# PostgreSQL ------------------------------------------------------------------

variable "db_engine_version" {
  description = "PostgreSQL version (major 15; a major alone lets RDS pick the newest minor)."
  type        = string
  default     = "15"

  validation {
    condition     = can(regex("^15(\\.[0-9]+)?$", var.db_engine_version))
    error_message = "db_engine_version must be PostgreSQL 15 (15 or 15.x): the parameter group family is postgres15."
  }
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.m6g.large"
}

variable "db_allocated_storage_gb" {
  description = "Initial storage of the database, in GiB (gp3)."
  type        = number
  default     = 50

  validation {
    condition     = var.db_allocated_storage_gb >= 20
    error_message = "db_allocated_storage_gb must be at least 20."
  }
}

variable "db_max_allocated_storage_gb" {
  description = "Ceiling of storage autoscaling, in GiB."
  type        = number
  default     = 500
}

variable "db_multi_az" {
  description = "Whether the database has a standby in another AZ (true in prod)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days automated backups (point-in-time recovery) are kept."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be 7 to 35."
  }
}

variable "db_name" {
  description = "Name of mercato's database."
  type        = string
  default     = "mercato"
}

variable "db_username" {
  description = "Master user name of the database (the user in DATABASE_URL)."
  type        = string
  default     = "mercato"
}

variable "db_max_connections" {
  description = "max_connections of PostgreSQL (mercato's roles each keep a pool)."
  type        = number
  default     = 200
}

variable "db_deletion_protection" {
  description = "Whether the database refuses deletion (turn off, apply, then destroy, to remove it on purpose)."
  type        = bool
  default     = true
}

# Redis -------------------------------------------------------------------------

variable "redis_engine_version" {
  description = "Redis OSS engine version (7.x)."
  type        = string
  default     = "7.1"

  validation {
    condition     = can(regex("^7\\.", var.redis_engine_version))
    error_message = "redis_engine_version must be 7.x."
  }
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.m6g.large"
}

variable "redis_num_cache_clusters" {
  description = "Number of Redis nodes (a primary and replicas); more than 1 turns on automatic failover and Multi-AZ."
  type        = number
  default     = 2

  validation {
    condition     = var.redis_num_cache_clusters >= 1 && var.redis_num_cache_clusters <= 6
    error_message = "redis_num_cache_clusters must be 1 to 6."
  }
}

variable "redis_snapshot_retention_days" {
  description = "Days Redis snapshots are kept (0 turns snapshots off)."
  type        = number
  default     = 7
}

# OpenSearch --------------------------------------------------------------------

variable "opensearch_engine_version" {
  description = "OpenSearch version of the domain (2.x)."
  type        = string
  default     = "OpenSearch_2.13"

  validation {
    condition     = can(regex("^OpenSearch_2\\.[0-9]+$", var.opensearch_engine_version))
    error_message = "opensearch_engine_version must be OpenSearch_2.x."
  }
}

variable "opensearch_instance_type" {
  description = "Instance type of the OpenSearch data nodes."
  type        = string
  default     = "r6g.large.search"
}

variable "opensearch_instance_count" {
  description = "Number of data nodes; spread over min(count, 3) AZs when more than 1."
  type        = number
  default     = 3

  validation {
    condition     = var.opensearch_instance_count >= 1
    error_message = "opensearch_instance_count must be at least 1."
  }
}

variable "opensearch_dedicated_master" {
  description = "Whether the domain has three dedicated master nodes (recommended in prod)."
  type        = bool
  default     = true
}

variable "opensearch_master_instance_type" {
  description = "Instance type of the dedicated master nodes."
  type        = string
  default     = "m6g.large.search"
}

variable "opensearch_volume_size_gb" {
  description = "EBS storage per data node, in GiB (gp3)."
  type        = number
  default     = 50
}

variable "opensearch_master_user" {
  description = "Internal master user of fine-grained access control (the user in OPENSEARCH_URL)."
  type        = string
  default     = "mercato"
}

variable "create_opensearch_service_linked_role" {
  description = "Whether to create the OpenSearch service-linked role VPC domains need; false when the account already has it (AWSServiceRoleForAmazonOpenSearchService)."
  type        = bool
  default     = true
}
