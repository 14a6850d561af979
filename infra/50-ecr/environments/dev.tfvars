environment = "dev"
region      = "eu-west-1"

keep_image_count     = 30
untagged_expiry_days = 3

tags = {
  CostCenter = "mercato-dev"
}
