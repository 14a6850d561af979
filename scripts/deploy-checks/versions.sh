# The versions of the PyPI tools the deployment checks install (scripts/check-deploy,
# scripts/check-infra): the one place to change them.
CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
PYTHON_HCL2_VERSION=8.1.4
