environment  = "prod"
region       = "eu-west-1"
state_bucket = "mercato-prod-tfstate-444455556666"

kubernetes_version = "1.31"

node_instance_types = ["m6i.xlarge"]
node_min_size       = 3
node_desired_size   = 3
node_max_size       = 9

cluster_admin_principal_arns = []

tags = {
  CostCenter = "mercato-prod"
}
