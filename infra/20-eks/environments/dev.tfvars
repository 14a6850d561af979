environment  = "dev"
region       = "eu-west-1"
state_bucket = "mercato-dev-tfstate-111122223333"

kubernetes_version = "1.31"

node_instance_types = ["t3.large"]
node_min_size       = 2
node_desired_size   = 2
node_max_size       = 4

# Operators' roles; whoever applies 70-addons needs cluster-admin too.
cluster_admin_principal_arns = []

tags = {
  CostCenter = "mercato-dev"
}
