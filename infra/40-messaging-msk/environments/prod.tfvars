environment  = "prod"
region       = "eu-west-1"
state_bucket = "mercato-prod-tfstate-444455556666"

broker_instance_type  = "kafka.m5.large"
broker_count          = 3
broker_volume_size_gb = 500

tags = {
  CostCenter = "mercato-prod"
}
