provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "terraform_remote_state" "eks" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "${var.environment}/20-eks/terraform.tfstate"
    region = coalesce(var.state_region, var.region)
  }
}

locals {
  name       = "${var.name}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  tags = merge(
    {
      Project     = var.name
      Environment = var.environment
      ManagedBy   = "terraform"
      Module      = "30-iam"
    },
    var.tags,
  )

  eks                = data.terraform_remote_state.eks.outputs
  github_environment = coalesce(var.github_environment, var.environment)

  # The Secrets Manager secrets mercato's pods read (through the External Secrets Operator).
  # 40-messaging-msk and 60-data create them under exactly these names, read from this module's
  # outputs. MSK requires the AmazonMSK_ prefix.
  secret_names = {
    database   = "${var.name}/${var.environment}/database"
    redis      = "${var.name}/${var.environment}/redis"
    opensearch = "${var.name}/${var.environment}/opensearch"
    kafka      = "${var.name}/${var.environment}/kafka"
    app        = "${var.name}/${var.environment}/app"
    msk_scram  = "AmazonMSK_${var.name}-${var.environment}"
  }

  # A secret's ARN ends in its name, a hyphen and six random characters.
  secret_arns = [
    for n in values(local.secret_names) :
    "arn:${local.partition}:secretsmanager:${var.region}:${local.account_id}:secret:${n}-??????"
  ]

  ecr_repository_arn = "arn:${local.partition}:ecr:${var.region}:${local.account_id}:repository/${var.ecr_repository_name}"
  github_oidc_arn    = var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : data.aws_iam_openid_connect_provider.github[0].arn
}

################################################################################
# KMS key of mercato's Secrets Manager secrets
################################################################################

resource "aws_kms_key" "secrets" {
  description             = "${local.name}: mercato's Secrets Manager secrets (database, redis, opensearch, kafka, app, MSK SCRAM)"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  # Use of the key is granted by IAM policies (the root statement), and only through Secrets
  # Manager for the secrets role (its policy below).
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKeyThroughIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
    ]
  })
}

resource "aws_kms_alias" "secrets" {
  name          = "alias/${local.name}-secrets"
  target_key_id = aws_kms_key.secrets.key_id
}

################################################################################
# GitHub Actions: OIDC provider and the deploy role
################################################################################

resource "aws_iam_openid_connect_provider" "github" {
  count = var.create_github_oidc_provider ? 1 : 0

  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
  # AWS trusts GitHub's certificate through its own root store; the list is still required by
  # the API. These are GitHub's published intermediate thumbprints.
  thumbprint_list = [
    "6938fd4d98bab03faadb97b34396831e3780aea1",
    "1c58a3a8518e8759bf075b76b750d4f2df264fcd",
  ]

  tags = {
    Name = "github-actions"
  }
}

data "aws_iam_openid_connect_provider" "github" {
  count = var.create_github_oidc_provider ? 0 : 1

  url = "https://token.actions.githubusercontent.com"
}

data "aws_iam_policy_document" "github_assume" {
  statement {
    sid     = "GitHubActionsOfThisRepository"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }

    # Only the main branch, or a job bound to this environment (whose reviewers and branch rules
    # GitHub enforces); no pull request, tag or other branch.
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values = [
        "repo:${var.github_repository}:ref:refs/heads/main",
        "repo:${var.github_repository}:environment:${local.github_environment}",
      ]
    }
  }
}

resource "aws_iam_role" "github_actions" {
  name                 = "${local.name}-github-deploy"
  description          = "Assumed by ${var.github_repository}'s workflows: push the image to ECR and deploy with Helm to ${local.eks.cluster_name}"
  assume_role_policy   = data.aws_iam_policy_document.github_assume.json
  max_session_duration = var.max_session_duration
}

data "aws_iam_policy_document" "github_actions" {
  # GetAuthorizationToken has no resource-level permissions: it only returns a login token;
  # what the token may do is decided by the statements below.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PushToTheMercatoRepository"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:DescribeRepositories",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = [local.ecr_repository_arn]
  }

  statement {
    sid       = "KubeconfigForTheCluster"
    actions   = ["eks:DescribeCluster"]
    resources = [local.eks.cluster_arn]
  }
}

resource "aws_iam_role_policy" "github_actions" {
  name   = "push-and-deploy"
  role   = aws_iam_role.github_actions.id
  policy = data.aws_iam_policy_document.github_actions.json
}

# Inside the cluster: the namespace-scoped access policy (Deployments, Services, Jobs, HPAs,
# PDBs, NetworkPolicies, Ingresses, ConfigMaps, Secrets, ServiceAccounts) and a Kubernetes group
# that 70-addons binds to the custom resources the chart also makes.
resource "aws_eks_access_entry" "github_actions" {
  cluster_name      = local.eks.cluster_name
  principal_arn     = aws_iam_role.github_actions.arn
  type              = "STANDARD"
  kubernetes_groups = [var.deployer_kubernetes_group]
}

resource "aws_eks_access_policy_association" "github_actions" {
  cluster_name  = local.eks.cluster_name
  principal_arn = aws_eks_access_entry.github_actions.principal_arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/${var.deploy_access_policy}"

  access_scope {
    type       = "namespace"
    namespaces = [var.kubernetes_namespace]
  }
}

################################################################################
# IRSA role of mercato's secrets (the External Secrets Operator's SecretStore)
################################################################################

data "aws_iam_policy_document" "secrets_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.eks.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.eks.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.kubernetes_namespace}:${var.secrets_service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.eks.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "secrets" {
  name               = "${local.name}-secrets"
  description        = "Assumed by ${var.kubernetes_namespace}/${var.secrets_service_account} (IRSA): read mercato's ${var.environment} secrets"
  assume_role_policy = data.aws_iam_policy_document.secrets_assume.json
}

data "aws_iam_policy_document" "secrets" {
  statement {
    sid       = "ReadMercatoSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = local.secret_arns
  }

  statement {
    sid       = "DecryptThemThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.secrets.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "secrets" {
  name   = "read-mercato-secrets"
  role   = aws_iam_role.secrets.id
  policy = data.aws_iam_policy_document.secrets.json
}
