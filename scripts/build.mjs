// One esbuild script for every bundle: the CLI, the engine worker (and its Hessian thread) and the extension host
// (platform node, vscode and the onnxruntime-node addon external), and the panel webview (browser).
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';

const watch = process.argv.includes('--watch');
const node = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  // onnxruntime-node is a native addon: it ships as node_modules, never bundled.
  external: ['vscode', 'onnxruntime-node'],
  logLevel: 'warning',
};
const builds = [
  { ...node, entryPoints: ['src/cli/index.ts'], outfile: 'dist/cli.js', banner: { js: '#!/usr/bin/env node' } },
  { ...node, entryPoints: ['scripts/bench/floor.ts'], outfile: 'dist/bench-floor.js' },
  { ...node, entryPoints: ['scripts/bench/floor-images.ts'], outfile: 'dist/bench-floor-images.js' },
  { ...node, entryPoints: ['src/extension/worker.ts'], outfile: 'dist/worker.js' },
  // The engine's Hessian worker thread, loaded from beside whichever bundle runs the engine.
  { ...node, entryPoints: ['src/core/curvature/hessianWorker.ts'], outfile: 'dist/hessian-worker.js' },
  // The image decoding threads (src/core/data/images/pool.ts), likewise loaded from beside the engine.
  { ...node, entryPoints: ['src/core/data/images/worker.ts'], outfile: 'dist/image-worker.js' },
  { ...node, entryPoints: ['src/extension/extension.ts'], outfile: 'dist/extension.js' },
  {
    bundle: true,
    platform: 'browser',
    target: 'es2022',
    format: 'iife',
    sourcemap: true,
    logLevel: 'warning',
    entryPoints: ['webview/main.ts'],
    outfile: 'dist/webview.js',
  },
];
// The JPEG and WebP decoders' WebAssembly, read from beside the bundles (src/core/data/images/wasm.ts).
mkdirSync('dist', { recursive: true });
for (const [from, to] of [
  ['node_modules/@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm', 'dist/mozjpeg_dec.wasm'],
  ['node_modules/@jsquash/webp/codec/dec/webp_dec.wasm', 'dist/webp_dec.wasm'],
])
  copyFileSync(from, to);
if (watch) {
  for (const b of builds) await (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
