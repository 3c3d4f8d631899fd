/**
 * Cache keys: an entry is named by the sha256 of the canonical JSON {v, modelSha256, dataPath
 * (realpath), options}. Also where the cache lives by default, and the content hash of a data file.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { createHash } from 'node:crypto';
import { throwIfAborted } from '../errors';
import type { TableOptions } from '../data/table';
import { FORMAT_VERSION } from './format';

/** Bytes per read when hashing a data file. */
const HASH_CHUNK = 4 << 20;

export interface CacheKeyParts {
  /** Hex sha256 of the model file. */
  modelSha256: string;
  /** The training data file as the caller names it; the key uses its realpath. */
  dataPath: string;
  /**
   * Everything that changes the rows: label column, features, classes... Plain JSON data;
   * like JSON.stringify, undefined values and functions are dropped (key order is not
   * significant, array order is).
   */
  options: Record<string, unknown>;
}

/** $XDG_CACHE_HOME/influence-lens (absolute XDG paths only, per the spec), else ~/.cache/influence-lens. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && nodePath.isAbsolute(xdg)) return nodePath.join(xdg, 'influence-lens');
  return nodePath.join(os.homedir(), '.cache', 'influence-lens');
}

/** Hex sha256 of a file's content, streamed in 4 MiB reads (the next read overlaps hashing). */
export async function hashFile(path: string, signal?: AbortSignal): Promise<string> {
  throwIfAborted(signal);
  const fh = await fs.promises.open(path, 'r');
  const hash = createHash('sha256');
  const bufs = [Buffer.allocUnsafe(HASH_CHUNK), Buffer.allocUnsafe(HASH_CHUNK)];
  let pos = 0;
  let pending: Promise<number> | null = null;
  try {
    let which = 0;
    pending = fh.read(bufs[which], 0, HASH_CHUNK, pos).then((r) => r.bytesRead);
    for (;;) {
      const got: number = await pending;
      pending = null;
      if (got === 0) break;
      pos += got;
      throwIfAborted(signal);
      const cur = bufs[which];
      which ^= 1;
      pending = fh.read(bufs[which], 0, HASH_CHUNK, pos).then((r) => r.bytesRead);
      hash.update(cur.subarray(0, got));
    }
  } finally {
    if (pending) await pending.catch(() => 0);
    await fh.close();
  }
  return hash.digest('hex');
}

/**
 * JSON with object keys sorted at every level. Drops undefined, functions and symbols like
 * JSON.stringify does; bigints become decimal strings.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(canon(value)) ?? 'null';
}

function canon(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v === null || typeof v !== 'object') return v;
  if (typeof (v as { toJSON?: unknown }).toJSON === 'function') return canon((v as { toJSON: () => unknown }).toJSON());
  if (Array.isArray(v))
    return v.map((x) => (x === undefined || typeof x === 'function' || typeof x === 'symbol' ? null : canon(x)));
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) {
    const x = (v as Record<string, unknown>)[k];
    if (x === undefined || typeof x === 'function' || typeof x === 'symbol') continue;
    out[k] = canon(x);
  }
  return out;
}

function realPath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return nodePath.resolve(p);
  }
}

export function keyOf(key: CacheKeyParts): { json: string; hex: string; dataPath: string } {
  const dataPath = realPath(key.dataPath);
  const json = canonicalJson({ v: FORMAT_VERSION, modelSha256: key.modelSha256, dataPath, options: key.options });
  return { json, hex: createHash('sha256').update(json).digest('hex'), dataPath };
}

/** The key of a data file's rows: everything that changes them, and nothing that does not (batch size, progress). */
export function rowsKey(modelSha256: string, dataPath: string, t: TableOptions): CacheKeyParts {
  return {
    modelSha256,
    dataPath,
    options: {
      labelColumn: t.labelColumn ?? 'label',
      features: t.features ?? null,
      // Absent unless set (canonicalJson drops undefined), so the keys of files without them are unchanged.
      ignoreColumns: t.ignoreColumns,
      indexColumn: t.indexColumn,
      classes: t.classes ?? null,
      numClasses: t.numClasses,
      format: t.format ?? null,
      requireLabel: t.requireLabel ?? true,
    },
  };
}

/**
 * The key of a data file's rows beyond the head: a rows key and the chosen layers, since the graph
 * with the backward pass's taps (and so the rows it gives) depends on them.
 */
export function deepRowsKey(rows: CacheKeyParts, layers: string[]): CacheKeyParts {
  return { ...rows, options: { ...rows.options, layers } };
}
