#!/usr/bin/env node
// Bundles each test/integration/**/*.ts (index.ts and every *.test.ts) separately into
// out/test/integration/, for mocha inside VS Code's extension host (see run-integration.mjs).
// vscode, mocha and the onnxruntime-node addon stay external: the extension host provides vscode,
// and mocha and onnxruntime-node load from the repository's node_modules.
import * as esbuild from 'esbuild';
import { readdirSync, rmSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const src = join(root, 'test/integration');
const out = join(root, 'out/test/integration');
const entryPoints = readdirSync(src, { recursive: true })
  .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && (f === 'index.ts' || f.endsWith('.test.ts')))
  .map((f) => join(src, f));
if (!entryPoints.some((f) => f.endsWith('/index.ts'))) throw new Error('test/integration/index.ts is missing');
rmSync(out, { recursive: true, force: true });
await esbuild.build({
  entryPoints,
  outbase: src,
  outdir: out,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: 'inline',
  external: ['vscode', 'mocha', 'onnxruntime-node'],
  logLevel: 'warning',
});
console.error(`build-tests: ${entryPoints.length} file(s) -> ${relative(root, out)}/`);
