environment  = "dev"
region       = "eu-west-1"
state_bucket = "mercato-dev-tfstate-111122223333"

db_instance_class        = "db.t4g.medium"
db_allocated_storage_gb  = 20
db_multi_az              = false
db_backup_retention_days = 7

redis_node_type          = "cache.t4g.small"
redis_num_cache_clusters = 1

opensearch_instance_type    = "t3.medium.search"
opensearch_instance_count   = 1
opensearch_dedicated_master = false
opensearch_volume_size_gb   = 20

secret_recovery_window_days = 7

tags = {
  CostCenter = "mercato-dev"
}
