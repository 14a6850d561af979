environment = "prod"
region      = "eu-west-1"

keep_image_count     = 100
untagged_expiry_days = 7

tags = {
  CostCenter = "mercato-prod"
}
