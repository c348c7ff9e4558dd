// Validates Kubernetes manifests (YAML streams: files given as arguments, or
// stdin) offline and strictly: against the API's JSON schemas with
// kubernetes-models (types, formats, required fields; also the Prometheus
// Operator's and the Gateway API's models), and against their TypeScript
// types with the TypeScript compiler, whose excess-property check rejects
// any field the API does not have ("readinesProbe" for "readinessProbe"),
// which the JSON schemas let through. Prints one line per object; exits 1
// if any object is invalid or of a kind it does not know.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));

// Where the model (JSON schema) and the type of each API group live.
function locate(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "snapshot.storage.k8s.io" && version === "v1" && kind === "VolumeSnapshot") {
    return { types: "./types/volumesnapshot.js", name: "IVolumeSnapshot" };
  }
  let module;
  if (group === "monitoring.coreos.com") {
    module = `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  } else if (group === "gateway.networking.k8s.io") {
    module = `@kubernetes-models/gateway-api/${group}/${version}/${kind}`;
  } else {
    module = group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
  }
  return { model: module, types: module, name: `I${kind}` };
}

const documents = [];
const sources = process.argv.length > 2
  ? process.argv.slice(2).map((path) => ({ path, text: readFileSync(path, "utf8") }))
  : [{ path: "<stdin>", text: readFileSync(0, "utf8") }];
for (const { path, text } of sources) {
  for (const document of parseAllDocuments(text)) {
    if (document.errors.length) {
      documents.push({ path, error: document.errors.map((e) => e.message).join("; ") });
      continue;
    }
    const object = document.toJS();
    if (object) documents.push({ path, object });
  }
}

const problems = documents.map(() => []);

// 1. JSON schemas.
for (const [i, { object, error }] of documents.entries()) {
  if (error) { problems[i].push(`YAML: ${error}`); continue; }
  if (typeof object.apiVersion !== "string" || typeof object.kind !== "string") {
    problems[i].push("no apiVersion or kind");
    continue;
  }
  const where = locate(object.apiVersion, object.kind);
  if (!where.model) continue;  // local type only: checked in step 2
  try {
    const module = await import(where.model);
    const Model = module[object.kind] ?? module.default;
    new Model(object).validate();
  } catch (error) {
    problems[i].push(error.code === "ERR_MODULE_NOT_FOUND" || error.code === "ERR_PACKAGE_PATH_NOT_EXPORTED"
      ? `unknown kind ${object.apiVersion} ${object.kind}` : error.message);
  }
}

// 2. Types: one program, one typed constant per object; a diagnostic's
// line says which object it is about.
const file = join(here, "__manifests__.ts");
let source = "";
const firstLine = [];
let line = 0;
for (const [i, { object }] of documents.entries()) {
  if (!object || problems[i].some((p) => p.startsWith("unknown kind") || p.startsWith("no apiVersion"))) continue;
  const where = locate(object.apiVersion, object.kind);
  const text = `import type { ${where.name} as T${i} } from "${where.types}";\n` +
    `export const object${i}: T${i} = ${JSON.stringify(object, null, 1)};\n`;
  firstLine.push([line, i]);
  source += text;
  line += text.split("\n").length - 1;
}
const options = {
  noEmit: true, strict: false, skipLibCheck: true, types: [],
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
};
const host = ts.createCompilerHost(options);
const readFile = host.readFile;
host.readFile = (name) => (name === file ? source : readFile(name));
const fileExists = host.fileExists;
host.fileExists = (name) => name === file || fileExists(name);
const getSourceFile = host.getSourceFile;
host.getSourceFile = (name, version, ...rest) =>
  name === file ? ts.createSourceFile(name, source, version) : getSourceFile(name, version, ...rest);
const program = ts.createProgram([file], options, host);
for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
  const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, " ");
  if (diagnostic.file?.fileName !== file) {
    console.log(`ERROR (type checker): ${message}`);
    process.exitCode = 1;
    continue;
  }
  const at = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start).line;
  let owner = firstLine[0][1];
  for (const [start, i] of firstLine) if (start <= at) owner = i;
  problems[owner].push(`${message} (at: ${source.split("\n")[at].trim().slice(0, 100)})`);
}

let failures = 0;
for (const [i, { path, object }] of documents.entries()) {
  const name = object ? `${object.apiVersion} ${object.kind}/${object.metadata?.name}` : path;
  if (problems[i].length) {
    failures += 1;
    for (const problem of problems[i]) console.log(`INVALID ${name}: ${problem}`);
  } else {
    console.log(`ok ${name}`);
  }
}
process.exit(failures || process.exitCode ? 1 : 0);
