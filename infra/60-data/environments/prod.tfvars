environment  = "prod"
region       = "eu-west-1"
state_bucket = "mercato-prod-tfstate-444455556666"

db_instance_class           = "db.m6g.xlarge"
db_allocated_storage_gb     = 100
db_max_allocated_storage_gb = 1000
db_multi_az                 = true
db_backup_retention_days    = 30

redis_node_type          = "cache.m6g.large"
redis_num_cache_clusters = 3

opensearch_instance_type    = "r6g.large.search"
opensearch_instance_count   = 3
opensearch_dedicated_master = true

tags = {
  CostCenter = "mercato-prod"
}
