/**
 * Child process for the cache kill test:
 *   node --import tsx test/helpers/cache-writer.ts <cacheDir> <dataPath> <modelSha256> <n> <D> <C> <seed> <optionsJson>
 * Stores a deterministic synthetic entry (see synthRows) and prints "STORED true|false".
 * The unit test imports synthRows from this file as well (main runs only as a script).
 *
 * With IL_CACHE_WRITER_PAUSE_AFTER=<bytes> set, every FileHandle write is counted and, once
 * that many bytes have been written, the process prints "PAUSED" and hangs in the middle
 * of the store, so the parent can SIGKILL it with a partial temp file on disk. The hook is
 * a monkeypatch of FileHandle.prototype.write made here; cache.ts knows nothing of it.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { hashFile } from '../../src/core/cache/keys';
import { RowsCache } from '../../src/core/cache/store';
import type { ForwardRows } from '../../src/core/model/engine';

/** xorshift32 stream in [0, 1). */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export async function synthRows(dataPath: string, n: number, D: number, C: number, seed: number): Promise<ForwardRows> {
  const r = rng(seed);
  const st = fs.statSync(dataPath);
  const sha256 = await hashFile(dataPath);
  const h = new Float32Array(n * D);
  for (let i = 0; i < h.length; i++) h[i] = (r() - 0.5) * 10;
  const g = new Float64Array(n * C);
  const z = new Float64Array(n * C);
  for (let i = 0; i < g.length; i++) {
    g[i] = r() - 0.5;
    z[i] = (r() - 0.5) * 1e3;
  }
  const loss = new Float64Array(n);
  const labels = new Int32Array(n);
  const lines = new Int32Array(n);
  const offsets = new Float64Array(n + 1);
  for (let i = 0; i < n; i++) {
    loss[i] = r() * 5;
    labels[i] = Math.floor(r() * C);
    lines[i] = i + 2;
    offsets[i + 1] = offsets[i] + 1 + Math.floor(r() * 100);
  }
  offsets[0] = 12;
  const columns = ['label', ...Array.from({ length: D }, (_, j) => `f${j}`)];
  return {
    n,
    C,
    D,
    bias: (seed & 1) === 0,
    h,
    g,
    z,
    loss,
    labels,
    lines,
    offsets,
    table: {
      path: dataPath,
      format: 'csv',
      columns,
      labelColumn: 'label',
      hasLabel: true,
      featureNames: columns.slice(1),
      featureCount: D,
      size: st.size,
      mtimeMs: st.mtimeMs,
      ctimeMs: st.ctimeMs,
      ino: st.ino,
    },
    summary: { rows: n, sha256, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino },
  };
}

async function main(): Promise<void> {
  const [dir, dataPath, modelSha256, n, D, C, seed, options] = process.argv.slice(2);
  const pauseAfter = Number(process.env.IL_CACHE_WRITER_PAUSE_AFTER ?? 0);
  if (pauseAfter > 0) {
    const probe = await fs.promises.open(process.execPath, 'r');
    const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<{ bytesWritten: number }> };
    await probe.close();
    const write = proto.write;
    let written = 0;
    proto.write = async function (this: unknown, ...args: unknown[]) {
      if (written >= pauseAfter) {
        process.stdout.write('PAUSED\n');
        setInterval(() => undefined, 1 << 30);
        return new Promise<never>(() => undefined);
      }
      const r = await write.apply(this, args);
      written += r.bytesWritten;
      return r;
    };
  }
  const rows = await synthRows(dataPath, Number(n), Number(D), Number(C), Number(seed));
  const ok = await new RowsCache(dir).store(
    { modelSha256, dataPath, options: JSON.parse(options) as Record<string, unknown> },
    rows,
  );
  process.stdout.write(`STORED ${ok}\n`);
}

// Run only as a script: the unit test imports synthRows from here.
if (nodePath.basename(process.argv[1] ?? '').startsWith('cache-writer.')) {
  main().catch((e) => {
    process.stderr.write(String((e as Error).stack ?? e) + '\n');
    process.exit(1);
  });
}
