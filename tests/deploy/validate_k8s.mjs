// validate_k8s.mjs - checks Kubernetes objects against the Kubernetes OpenAPI schemas, as
// compiled into the npm package kubernetes-models (validators generated from the API's OpenAPI
// definitions: types, required fields, enums, formats). Kubernetes' schemas allow unknown fields,
// so this also walks each object against the package's type declarations (.d.ts: the same
// definitions' property lists) and reports any field the API does not have (what `kubectl
// --validate=strict` and kubeconform -strict report). Custom resources (PyTorchJob) are checked
// through their pod templates (PodTemplateSpec). Run by test_manifests.sh:
//   node validate_k8s.mjs NODE_MODULES OBJECTS.json
// Prints one line per object; exits 1 if any object fails.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, objectsFile] = process.argv.slice(2);
const roots = [
  path.join(nodeModules, "kubernetes-models"),
  path.join(nodeModules, "@kubernetes-models", "apimachinery"),
];

// Type name (IIoK8s...) -> {file, props: {field: type text}}; "apiVersion kind" -> type name.
const types = new Map();
const topLevel = new Map();

function walk(dir, out) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== "_schemas" && e.name !== "node_modules") walk(p, out);
    } else if (e.name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

for (const root of roots) {
  for (const file of walk(root, [])) {
    const text = fs.readFileSync(file, "utf8");
    const alias = /export type \{ (\w+) as (\w+)/.exec(text);
    const iface = /export interface (\w+)(?: extends [\w, ]+)? \{\n([\s\S]*?)\n\}/.exec(text);
    if (!alias || !iface || alias[1] !== iface[1]) continue;
    const props = {};
    let cur = null;
    for (const line of iface[2].split("\n")) {
      const m = /^ {4}"([^"]+)"\??: (.*)$/.exec(line);
      if (m) {
        cur = m[1];
        props[cur] = m[2];
      } else if (cur && !/^\s*(\/\*\*|\*)/.test(line)) {
        props[cur] += " " + line.trim();
      }
    }
    for (const k of Object.keys(props)) props[k] = props[k].replace(/;\s*$/, "").trim();
    types.set(alias[2], { file, props });
    const av = /"apiVersion": "([^"]+)"/.exec(iface[2]);
    const kd = /"kind": "([^"]+)"/.exec(iface[2]);
    if (av && kd) topLevel.set(`${av[1]} ${kd[1]}`, alias[2]);
  }
}
if (!topLevel.has("batch/v1 Job")) {
  console.log("FAIL could not read kubernetes-models' type declarations");
  process.exit(1);
}

// Unknown fields, recursively, following the declared types.
function strict(value, typeName, where, errs) {
  const t = types.get(typeName);
  if (!t || value === null || typeof value !== "object" || Array.isArray(value)) return;
  for (const [k, v] of Object.entries(value)) {
    if (!(k in t.props)) {
      errs.push(`${where}/${k}: no such field in ${typeName.replace(/^IIoK8s/, "")}`);
      continue;
    }
    followType(v, t.props[k], `${where}/${k}`, errs);
  }
}

function followType(v, typeText, where, errs) {
  let m;
  if ((m = /^Array<(\w+)>$/.exec(typeText))) {
    if (Array.isArray(v)) v.forEach((x, i) => strict(x, m[1], `${where}/${i}`, errs));
  } else if ((m = /^\{ \[key: string\]: (\w+);? \}$/.exec(typeText))) {
    if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) strict(x, m[1], `${where}/${k}`, errs);
  } else if (/^\w+$/.test(typeText)) {
    strict(v, typeText, where, errs);
  }
}

// The package's compiled validator of a type: its model class's module, or its _schemas file.
async function schemaValidate(typeName, obj) {
  const t = types.get(typeName);
  const mod = await import(pathToFileURL(t.file.replace(/\.d\.ts$/, ".js")).href);
  const cls = Object.values(mod).find((x) => typeof x === "function" && x.prototype?.validate);
  try {
    new cls(obj).validate();
    return [];
  } catch (e) {
    return [String(e.message || e)];
  }
}

const objects = JSON.parse(fs.readFileSync(objectsFile, "utf8"));
let bad = 0;
let checked = 0;
for (const { source, object } of objects) {
  const id = `${source}: ${object.kind}/${object.metadata?.name}`;
  const errs = [];
  const targets = [];
  const typeName = topLevel.get(`${object.apiVersion} ${object.kind}`);
  if (typeName) {
    targets.push([typeName, object, ""]);
  } else if (object.kind === "PyTorchJob") {
    for (const [rt, rs] of Object.entries(object.spec?.pytorchReplicaSpecs || {})) {
      targets.push(["IIoK8sApiCoreV1PodTemplateSpec", rs.template, `/spec/pytorchReplicaSpecs/${rt}/template`]);
    }
  } else {
    errs.push(`no schema for ${object.apiVersion} ${object.kind}`);
  }
  for (const [tn, o, prefix] of targets) {
    for (const e of await schemaValidate(tn, o)) errs.push(`${prefix} ${e}`.trim());
    strict(o, tn, prefix, errs);
  }
  checked++;
  if (errs.length) {
    bad++;
    console.log(`FAIL ${id}`);
    for (const e of errs) console.log(`     ${e}`);
  } else {
    console.log(`ok   ${id} (${targets.map((t) => t[0].replace(/^IIoK8s/, "")).join(", ")})`);
  }
}
console.log(`schema: ${checked} objects checked against kubernetes-models' OpenAPI validators, ${bad} failed`);
process.exit(bad ? 1 : 0);
