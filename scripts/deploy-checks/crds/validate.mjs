// Validates every External Secrets Operator object (external-secrets.io/v1 ExternalSecret and
// SecretStore) in the YAML files given against the operator's CRD schemas, as the API server
// would on `kubectl apply`: the models of @kubernetes-models/external-secrets, generated from the
// operator's CRDs. kubernetes-validate knows only Kubernetes' own kinds and skips these.
// Prints one line per problem; exits 1 if there is any, or if no such object was found.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ExternalSecret, SecretStore } from "@kubernetes-models/external-secrets/external-secrets.io/v1";

const models = { ExternalSecret, SecretStore };
let problems = 0;
let checked = 0;
for (const path of process.argv.slice(2)) {
  for (const document of parseAllDocuments(readFileSync(path, "utf8"))) {
    const object = document.toJS();
    if (!object || !String(object.apiVersion).startsWith("external-secrets.io/")) continue;
    const where = `${path}: ${object.kind} ${object.metadata?.name}`;
    const Model = object.apiVersion === "external-secrets.io/v1" ? models[object.kind] : undefined;
    if (!Model) {
      console.log(`${where}: ${object.apiVersion} ${object.kind} is not a kind this check knows`);
      problems++;
      continue;
    }
    try {
      new Model(object).validate();
      checked++;
    } catch (error) {
      console.log(`${where}: ${error.message}`);
      problems++;
    }
  }
}
if (checked === 0 && problems === 0) {
  console.log("no External Secrets Operator object found");
  problems++;
}
process.exit(problems ? 1 : 0);
