"""What the schemas cannot see in the rendered Helm chart (scripts/check-deploy runs it on each
environment's manifests): every role of mercato's roles table is deployed as its own role with
the probes, security context and resources a production pod needs; every Deployment has its
Service, PodDisruptionBudget and NetworkPolicy, and the stateless ones an autoscaler; secrets
are referenced, never written; the migration Job runs as a hook before the roles.

Usage: chart.py MANIFESTS.yaml ENVIRONMENT   (ENVIRONMENT: dev or prod, whose values rendered it)
Prints one line per problem; exits 1 if there is any.
"""

import sys

import yaml

path, environment = sys.argv[1], sys.argv[2]

# The roles, and the ports each must reach beyond DNS, as the code connects (server/src/platform.rs,
# serve.rs, bus.rs): PostgreSQL 5432 and Redis 6379 for all, Kafka 9096 (MSK's SASL/SCRAM port)
# for the Kafka-fed roles, the relay, the notifier and the command API's dead-letter routes,
# OpenSearch 443 for the query API and the projector, HTTPS 443 for Stripe, OIDC keys, webhooks
# and SMS, SMTP 587 for the notifier, OTLP 4317 for traces, the gateway 8080 for the console.
REACHES = {
    "command-api": {5432, 6379, 9096, 443, 4317},
    "query-api": {5432, 6379, 9096, 443, 4317},
    "projector": {5432, 6379, 9096, 443, 4317},
    "saga": {5432, 6379, 9096, 443, 4317},
    "relay": {5432, 6379, 9096, 4317},
    "notifier": {5432, 6379, 9096, 587, 443, 4317},
    "console": {5432, 6379, 8080, 4317},
}
roles = list(REACHES)
# The roles scaled by CPU in each environment (prod's values turn the autoscalers on); the others
# hold a lease or a share of Kafka's partitions, which more pods would not speed up.
AUTOSCALED = {"dev": set(), "prod": {"command-api", "query-api", "console", "gateway"}}[environment]
documents = [document for document in yaml.safe_load_all(open(path)) if document]
errors = []


def of_kind(kind):
    return [document for document in documents if document["kind"] == kind]


def labels_match(selector, labels):
    return all(labels.get(key) == value for key, value in selector.items())


SECRET_NAMES = ("DATABASE_URL", "REDIS_URL", "OPENSEARCH_URL", "KAFKA_SASL_PASSWORD", "SMTP_URL",
                "MERCATO_SIGNING_KEY", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "TWILIO_AUTH_TOKEN")

if of_kind("Secret"):
    errors.append("the chart writes a Secret: secrets must come from the ExternalSecret or an existing Secret")
for config in of_kind("ConfigMap"):
    for key in config.get("data", {}):
        if key in SECRET_NAMES:
            errors.append(f"ConfigMap {config['metadata']['name']} holds {key}, a secret")

deployments = {}
for deployment in of_kind("Deployment"):
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    component = pod["metadata"]["labels"].get("app.kubernetes.io/component")
    deployments[component] = deployment
    if not labels_match(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]):
        errors.append(f"{name}: its selector does not match its pods' labels")
    if spec.get("automountServiceAccountToken") is not False:
        errors.append(f"{name}: mounts a service account token it does not need")
    for container in spec["containers"]:
        where = f"{name}/{container['name']}"
        context = container.get("securityContext", {})
        for key, wanted in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True),
                            ("allowPrivilegeEscalation", False)):
            if context.get(key) is not wanted:
                errors.append(f"{where}: securityContext.{key} is not {wanted}")
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            errors.append(f"{where}: does not drop every capability")
        if component != "migrate" and "preStop" not in container.get("lifecycle", {}):
            errors.append(f"{where}: no preStop pause (a rollout would drop requests)")
        resources = container.get("resources", {})
        if not resources.get("requests") or not resources.get("limits", {}).get("memory"):
            errors.append(f"{where}: no resource requests or memory limit")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in container:
                errors.append(f"{where}: no {probe}")
        for variable in container.get("env", []):
            if variable["name"] in SECRET_NAMES and "value" in variable:
                errors.append(f"{where}: {variable['name']} is written in the manifest")
        if component in roles:
            args = container.get("args", [])
            if args[:3] != ["serve", "--role", component]:
                errors.append(f"{where}: runs {args}, not `serve --role {component}`")
            if container["readinessProbe"]["httpGet"]["path"] != "/ready":
                errors.append(f"{where}: readiness is not GET /ready")
            if container["livenessProbe"]["httpGet"]["path"] != "/health":
                errors.append(f"{where}: liveness is not GET /health")
            sources = [source.get("secretRef", {}).get("name") for source in container.get("envFrom", [])]
            if not any(sources):
                errors.append(f"{where}: takes no Secret (DATABASE_URL and the rest)")

for role in roles:
    if role not in deployments:
        errors.append(f"role {role} has no Deployment")
if "gateway" not in deployments:
    errors.append("no gateway Deployment")

services = of_kind("Service")
budgets = of_kind("PodDisruptionBudget")
policies = of_kind("NetworkPolicy")
autoscalers = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind("HorizontalPodAutoscaler")}
for component, deployment in deployments.items():
    name = deployment["metadata"]["name"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    if not any(labels_match(service["spec"]["selector"], labels) for service in services):
        errors.append(f"{name}: no Service selects its pods")
    if not any(labels_match(budget["spec"]["selector"]["matchLabels"], labels) for budget in budgets):
        errors.append(f"{name}: no PodDisruptionBudget")
    selecting = [policy for policy in policies
                 if labels_match(policy["spec"]["podSelector"].get("matchLabels", {}), labels)]
    types = {kind for policy in selecting for kind in policy["spec"].get("policyTypes", [])}
    if types != {"Ingress", "Egress"}:
        errors.append(f"{name}: NetworkPolicies cover {sorted(types)}, not both Ingress and Egress")
    if component in AUTOSCALED:
        if name not in autoscalers:
            errors.append(f"{name}: no HorizontalPodAutoscaler in {environment}")
        elif "replicas" in deployment["spec"]:
            errors.append(f"{name}: a fixed replica count beside its autoscaler (each apply would reset it)")
    elif name in autoscalers:
        errors.append(f"{name}: scaled by CPU in {environment}, which its values do not ask for")
    elif "replicas" not in deployment["spec"]:
        errors.append(f"{name}: no replica count and no autoscaler")
    if component in REACHES:
        ports = {port["port"] for policy in selecting for rule in policy["spec"].get("egress", [])
                 for port in rule.get("ports", []) if port.get("protocol", "TCP") == "TCP"} - {53}
        if ports != REACHES[component]:
            missing, extra = REACHES[component] - ports, ports - REACHES[component]
            errors.append(f"{name}: egress to ports {sorted(ports)}; missing {sorted(missing)}, not needed {sorted(extra)}")
    for budget in budgets:
        if labels_match(budget["spec"]["selector"]["matchLabels"], labels) and \
                budget["spec"].get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            errors.append(f"{name}: its budget keeps unready pods from eviction (a node drain would wait on them)")

jobs = [job for job in of_kind("Job") if job["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "migrate"]
if not jobs:
    errors.append("no migration Job")
for job in jobs:
    hook = job["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    if set(hook.split(",")) != {"pre-install", "pre-upgrade"}:
        errors.append(f"Job {job['metadata']['name']}: not a pre-install,pre-upgrade hook (it must run before the roles)")
    container = job["spec"]["template"]["spec"]["containers"][0]
    if container.get("args") != ["migrate"]:
        errors.append(f"Job {job['metadata']['name']}: runs {container.get('args')}, not `migrate`")

for document in documents:
    if document["kind"] not in ("Namespace",) and not document["metadata"].get("namespace"):
        errors.append(f"{document['kind']} {document['metadata']['name']}: no namespace")

for error in errors:
    print(error)
sys.exit(1 if errors else 0)
