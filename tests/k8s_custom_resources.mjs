// Validates Kubernetes custom resources against their published schemas (npm @kubernetes-models).
// Usage: node k8s_custom_resources.mjs SCHEMA_PREFIX < documents.json  (a JSON array of resources)
// Prints one line per invalid resource and exits 1 if any; 0 when all are valid.
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = path.resolve(process.argv[2], "node_modules", "@kubernetes-models");
const GROUPS = {
  "argoproj.io/v1alpha1": "argo-rollouts/argoproj.io/v1alpha1/index.js",
  "monitoring.coreos.com/v1": "prometheus-operator/monitoring.coreos.com/v1/index.js",
};

const documents = JSON.parse(readFileSync(0, "utf8"));
let failures = 0;
for (const doc of documents) {
  const name = `${doc.kind}/${doc.metadata?.name}`;
  const file = GROUPS[doc.apiVersion];
  const Model = file && (await import(pathToFileURL(path.join(modules, file))))[doc.kind];
  if (!Model) {
    console.log(`${name}: no schema for ${doc.apiVersion} ${doc.kind}`);
    failures++;
    continue;
  }
  try {
    new Model(doc).validate();
  } catch (error) {
    console.log(`${name}: ${error.message.split("\n")[0]}`);
    failures++;
  }
}
process.exit(failures ? 1 : 0);
