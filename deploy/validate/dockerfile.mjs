// Lints Dockerfiles (paths as arguments) with dockerfile-utils, the parser
// and validator behind VS Code's Dockerfile language server: unknown
// instructions, bad flags and arguments, malformed JSON forms, duplicate
// stage names. Prints one line per problem; exits 1 if there is any.
import { readFileSync } from "node:fs";
import { validate } from "dockerfile-utils";

let problems = 0;
for (const path of process.argv.slice(2)) {
  const text = readFileSync(path, "utf8");
  for (const diagnostic of validate(text)) {
    problems += 1;
    const { line, character } = diagnostic.range.start;
    console.log(`${path}:${line + 1}:${character + 1}: ${diagnostic.message}`);
  }
  if (!problems) console.log(`ok ${path}`);
}
process.exit(problems ? 1 : 0);
