// lint_dockerfile.mjs - lints a Dockerfile with the npm package dockerfile-utils (the validator
// behind common Dockerfile editors: unknown instructions, bad arguments, bad flags, ports,
// escapes...), its default settings, every diagnostic counted as a failure. Run by
// test_manifests.sh:   node lint_dockerfile.mjs NODE_MODULES DOCKERFILE
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, file] = process.argv.slice(2);
const pkg = path.join(nodeModules, "dockerfile-utils");
const main = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8")).main;
const { validate } = await import(pathToFileURL(path.join(pkg, main)).href);
const diags = validate(fs.readFileSync(file, "utf8"));
for (const d of diags) console.log(`FAIL ${file}:${d.range.start.line + 1}: ${d.message}`);
console.log(`dockerfile: ${path.basename(file)} linted by dockerfile-utils, ${diags.length} problems`);
process.exit(diags.length ? 1 : 0);
