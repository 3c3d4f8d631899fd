// One esbuild script for every bundle: the CLI and the extension host (the webview joins later).
import * as esbuild from 'esbuild';

const watch = process.argv.includes('--watch');
const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  // onnxruntime-node is a native addon: it ships as node_modules, never bundled.
  external: ['vscode', 'onnxruntime-node'],
  logLevel: 'info',
};
const builds = [
  { ...common, entryPoints: ['src/cli/index.ts'], outfile: 'dist/cli.js', banner: { js: '#!/usr/bin/env node' } },
];
if (watch) {
  for (const b of builds) await (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
