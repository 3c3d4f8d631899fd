/**
 * The decoders' WebAssembly modules. The bundles (dist/) carry copies beside them (scripts/build.mjs),
 * because the packages find theirs through `import.meta.url`, which a CommonJS bundle does not have;
 * from the TypeScript sources (tests) they are read from node_modules.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The part of the WebAssembly API used here (the project's TypeScript libs do not declare it). */
declare const WebAssembly: { compile(bytes: Uint8Array): Promise<WasmModule> };
/** A compiled module, passed to the packages' init(). */
export type WasmModule = object;

const compiled = new Map<string, Promise<WasmModule>>();

/** Compiles `name` from beside this bundle, else the package file `spec`, once per process. */
export function loadWasm(name: string, spec: string): Promise<WasmModule> {
  let m = compiled.get(name);
  if (!m) {
    const beside = join(__dirname, name);
    const file = existsSync(beside) ? beside : require.resolve(spec);
    m = WebAssembly.compile(readFileSync(file));
    compiled.set(name, m);
  }
  return m;
}

/** The bytes in an ArrayBuffer of their own (a Node Buffer may be a view of a shared pool). */
export function ownBuffer(b: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(b.length);
  copy.set(b);
  return copy.buffer;
}
