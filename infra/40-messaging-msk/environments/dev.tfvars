environment  = "dev"
region       = "eu-west-1"
state_bucket = "mercato-dev-tfstate-111122223333"

# Three small brokers, one per AZ: replication factor 3 and min.insync.replicas 2 hold in dev too.
broker_instance_type  = "kafka.t3.small"
broker_count          = 3
broker_volume_size_gb = 20

secret_recovery_window_days = 7

tags = {
  CostCenter = "mercato-dev"
}
