// Validates Kubernetes manifests (a YAML stream: files given as arguments,
// or stdin) against the API's JSON schemas, offline, with kubernetes-models
// (and the Prometheus Operator's models for PodMonitor). Prints one line per
// object; exits 1 if any object is invalid or of an unknown kind.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const sources = process.argv.length > 2
  ? process.argv.slice(2).map((path) => readFileSync(path, "utf8"))
  : [readFileSync(0, "utf8")];

function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  }
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

let failures = 0;
for (const source of sources) {
  for (const document of parseAllDocuments(source)) {
    const object = document.toJS();
    if (!object) continue;
    const name = `${object.kind}/${object.metadata?.name}`;
    try {
      const module = await import(modulePath(object.apiVersion, object.kind));
      const Model = module[object.kind] ?? module.default;
      new Model(object).validate();
      console.log(`ok ${object.apiVersion} ${name}`);
    } catch (error) {
      failures += 1;
      console.log(`INVALID ${object.apiVersion} ${name}: ${error.message}`);
    }
  }
}
process.exit(failures ? 1 : 0);
