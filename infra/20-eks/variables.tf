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

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and the node group."
  type        = string
  default     = "1.31"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.31."
  }
}

variable "endpoint_public_access" {
  description = "Whether the Kubernetes API has a public endpoint besides the private one; when true it is reachable from public_access_cidrs only."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDR blocks allowed to reach the public API endpoint (only with endpoint_public_access = true; 0.0.0.0/0 is refused)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "public_access_cidrs must be valid CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "cluster_admin_principal_arns" {
  description = "IAM role or user ARNs given cluster-admin through EKS access entries (operators, and whoever applies 70-addons when that is not the creator)."
  type        = list(string)
  default     = []
}

variable "bootstrap_creator_admin" {
  description = "Whether the principal that creates the cluster gets cluster-admin through an access entry (needed by 70-addons unless its runner is in cluster_admin_principal_arns)."
  type        = bool
  default     = true
}

variable "cluster_log_types" {
  description = "Control-plane log types sent to CloudWatch Logs."
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  validation {
    condition     = alltrue([for t in var.cluster_log_types : contains(["api", "audit", "authenticator", "controllerManager", "scheduler"], t)])
    error_message = "cluster_log_types may contain api, audit, authenticator, controllerManager and scheduler."
  }
}

variable "log_retention_days" {
  description = "Days the control-plane logs are kept."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention period CloudWatch Logs accepts."
  }
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed node group."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "node_capacity_type" {
  description = "ON_DEMAND or SPOT."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.node_capacity_type)
    error_message = "node_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "node_min_size" {
  description = "Minimum number of nodes."
  type        = number
  default     = 3
}

variable "node_desired_size" {
  description = "Number of nodes at creation (later changes by the autoscaler are kept)."
  type        = number
  default     = 3
}

variable "node_max_size" {
  description = "Maximum number of nodes."
  type        = number
  default     = 6

  validation {
    condition     = var.node_max_size >= 1
    error_message = "node_max_size must be at least 1."
  }
}

variable "node_disk_size_gb" {
  description = "Size of each node's root volume (gp3, encrypted with this module's EBS key)."
  type        = number
  default     = 50

  validation {
    condition     = var.node_disk_size_gb >= 20
    error_message = "node_disk_size_gb must be at least 20."
  }
}

variable "node_metadata_hop_limit" {
  description = "IMDSv2 response hop limit on the nodes; 1 keeps pods (which use IRSA) from reaching the node's instance role."
  type        = number
  default     = 1

  validation {
    condition     = var.node_metadata_hop_limit >= 1 && var.node_metadata_hop_limit <= 2
    error_message = "node_metadata_hop_limit must be 1 or 2."
  }
}

variable "addon_versions" {
  description = "Versions of the EKS add-ons (vpc-cni, coredns, kube-proxy, aws-ebs-csi-driver); a missing entry takes the cluster version's default."
  type        = map(string)
  default     = {}
}
