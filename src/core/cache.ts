/**
 * Disk cache of per-row forward results (ForwardRows), so that a second `explain` on the
 * same training file and model skips the table parse and the ONNX forward pass.
 *
 * One entry per (model, data file, row-changing options) in `<dir>/<hex>.ilcache`, where
 * hex = sha256 of the canonical JSON {v, modelSha256, dataPath (realpath), options}.
 *
 * Entry layout (all integers little-endian; every array starts 8-byte aligned):
 *
 *   0   8   magic "ILCACHE1"
 *   8   4   u32 format version (FORMAT_VERSION)
 *   12  4   u32 J = byte length of the header JSON
 *   16  32  sha256 of the header JSON bytes
 *   48  J   header JSON (UTF-8): see EntryHeader
 *       ..  zero padding to a multiple of 8
 *       ..  h f32[n·D], g f64[n·C], z f64[n·C], loss f64[n], labels i32[n], lines i32[n],
 *           offsets f64[n+1]; each followed by zero padding to a multiple of 8
 *   B   8   trailer magic "ILCEND\0\0"
 *   B+8 8   u64 B (bytes before the trailer)
 *   B+16 32 sha256 of bytes [0, B)
 *
 * So the file size is exactly B + 48. Arrays are written from, and read straight into,
 * the typed arrays' own memory in chunks (no whole-file buffer, no copies); the sha256 of
 * each chunk is computed while the next chunk's I/O is in flight.
 *
 * A derived entry `<hex>.<name>.ilcache` (the head's curvature, computed from the rows) has the
 * same preamble with magic "ILDERIV1", a header JSON {key, name, dataSha256, lengths}, float64
 * arrays of those lengths, and the same trailer. It is valid only while the rows entry's data file
 * has that sha256.
 *
 * Entries are written to `<name>.<pid>.<random>.tmp` in the same directory, fsynced and
 * renamed over the final name, so a reader sees either the old complete entry or the new
 * one. Temp files older than an hour (left by killed runs) are deleted on construction
 * and on every store.
 */

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as nodePath from 'node:path';
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { CancelledError, throwIfAborted } from './errors';
import type { ForwardRows } from './forward';
import type { TableInfo, TableSummary } from './table';

export const FORMAT_VERSION = 2;
const MAGIC = Buffer.from('ILCACHE1', 'latin1');
const END_MAGIC = Buffer.from('ILCEND\0\0', 'latin1');
const PREAMBLE = 48;
const TRAILER = 48;
const MAX_HEADER = 64 << 20;
/** Bytes per read/write call on array data. */
const CHUNK = 16 << 20;
/** Bytes per read when hashing a data file. */
const HASH_CHUNK = 4 << 20;
const TEMP_MAX_AGE_MS = 60 * 60 * 1000;
const DERIVED_MAGIC = Buffer.from('ILDERIV1', 'latin1');
/** Entries: `<hex>.ilcache` (rows) and `<hex>.<name>.ilcache` (derived from those rows). */
const ENTRY_RE = /^[0-9a-f]{64}(\.[a-z0-9-]+)?\.ilcache$/;
const TEMP_RE = /^[0-9a-f]{64}(\.[a-z0-9-]+)?\.\d+\.[0-9a-f]+\.tmp$/;
const NAME_RE = /^[a-z0-9-]+$/;

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

type ArrayName = 'h' | 'g' | 'z' | 'loss' | 'labels' | 'lines' | 'offsets';
type ArrayType = 'f32' | 'f64' | 'i32';

const ARRAYS: readonly { name: ArrayName; type: ArrayType; per: 'nD' | 'nC' | 'n' | 'n1' }[] = [
  { name: 'h', type: 'f32', per: 'nD' },
  { name: 'g', type: 'f64', per: 'nC' },
  { name: 'z', type: 'f64', per: 'nC' },
  { name: 'loss', type: 'f64', per: 'n' },
  { name: 'labels', type: 'i32', per: 'n' },
  { name: 'lines', type: 'i32', per: 'n' },
  { name: 'offsets', type: 'f64', per: 'n1' },
];

const BYTES: Record<ArrayType, number> = { f32: 4, f64: 8, i32: 4 };

interface ArraySpec {
  name: ArrayName;
  type: ArrayType;
  /** Element count. */
  length: number;
  /** Absolute byte offset in the file (8-aligned). */
  offset: number;
  bytes: number;
}

/** The JSON header of an entry. */
interface EntryHeader {
  format: number;
  /** Canonical key JSON and its sha256 (= the file name). */
  key: string;
  keyHash: string;
  modelSha256: string;
  /** Resolved (realpath) data file. */
  dataPath: string;
  n: number;
  C: number;
  D: number;
  bias: boolean;
  table: TableInfo;
  summary: TableSummary;
  arrays: ArraySpec[];
  /** Bytes before the trailer. */
  body: number;
  created: number;
}

// ---------------------------------------------------------------------------------------
// Public helpers

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
  if (Array.isArray(v)) return v.map((x) => (x === undefined || typeof x === 'function' || typeof x === 'symbol' ? null : canon(x)));
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

function keyOf(key: CacheKeyParts): { json: string; hex: string; dataPath: string } {
  const dataPath = realPath(key.dataPath);
  const json = canonicalJson({ v: FORMAT_VERSION, modelSha256: key.modelSha256, dataPath, options: key.options });
  return { json, hex: createHash('sha256').update(json).digest('hex'), dataPath };
}

// ---------------------------------------------------------------------------------------
// Layout

const align8 = (x: number): number => Math.ceil(x / 8) * 8;

function counts(n: number, C: number, D: number): Record<'nD' | 'nC' | 'n' | 'n1', number> {
  return { nD: n * D, nC: n * C, n, n1: n + 1 };
}

function layout(start: number, n: number, C: number, D: number): { arrays: ArraySpec[]; body: number } {
  const c = counts(n, C, D);
  const arrays: ArraySpec[] = [];
  let off = start;
  for (const a of ARRAYS) {
    const length = c[a.per];
    const bytes = length * BYTES[a.type];
    arrays.push({ name: a.name, type: a.type, length, offset: off, bytes });
    off = align8(off + bytes);
  }
  return { arrays, body: off };
}

/** A Buffer view of a typed array's bytes (no copy). */
function bytesOf(a: Float32Array | Float64Array | Int32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Non-overlapping pieces of the body after the JSON header: array views (at 8-aligned offsets) and zero pads. */
function bodyPieces(arrays: { offset: number; view: Buffer }[], jsonEnd: number, padBuf: Buffer): { pos: number; buf: Buffer }[] {
  const pieces: { pos: number; buf: Buffer }[] = [];
  let pos = jsonEnd;
  const pad = (to: number): void => {
    if (to > pos) pieces.push({ pos, buf: padBuf.subarray(0, to - pos) });
    pos = to;
  };
  for (const { offset, view: v } of arrays) {
    pad(offset);
    for (let o = 0; o < v.length; o += CHUNK) pieces.push({ pos: pos + o, buf: v.subarray(o, Math.min(v.length, o + CHUNK)) });
    pos += v.length;
  }
  pad(align8(pos));
  return pieces;
}

class Corrupt extends Error {}

function check(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Corrupt(what);
}

const isInt = (x: unknown, min = 0): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= min;
const isHex64 = (x: unknown): x is string => typeof x === 'string' && /^[0-9a-f]{64}$/.test(x);

function validateHeader(h: EntryHeader, expect: { json: string; hex: string; modelSha256: string }, jsonEnd: number, size: number): void {
  check(h !== null && typeof h === 'object', 'header');
  check(h.format === FORMAT_VERSION, 'format');
  check(h.key === expect.json && h.keyHash === expect.hex, 'key');
  check(h.modelSha256 === expect.modelSha256, 'model');
  check(isInt(h.n) && isInt(h.C, 1) && isInt(h.D, 1) && typeof h.bias === 'boolean', 'dims');
  const s = h.summary;
  const isTime = (x: unknown) => typeof x === 'number' && Number.isFinite(x);
  check(s !== null && typeof s === 'object' && s.rows === h.n && isHex64(s.sha256) && isInt(s.size) && isTime(s.mtimeMs) && isTime(s.ctimeMs) && isInt(s.ino), 'summary');
  const t = h.table;
  check(
    t !== null &&
      typeof t === 'object' &&
      typeof t.path === 'string' &&
      (t.format === 'csv' || t.format === 'tsv' || t.format === 'jsonl') &&
      Array.isArray(t.columns) &&
      Array.isArray(t.featureNames) &&
      typeof t.labelColumn === 'string' &&
      typeof t.hasLabel === 'boolean' &&
      isInt(t.featureCount) &&
      t.size === s.size &&
      t.mtimeMs === s.mtimeMs &&
      t.ctimeMs === s.ctimeMs &&
      t.ino === s.ino,
    'table',
  );
  const want = layout(align8(jsonEnd), h.n, h.C, h.D);
  check(Array.isArray(h.arrays) && h.arrays.length === want.arrays.length, 'arrays');
  for (let i = 0; i < want.arrays.length; i++) {
    const a = h.arrays[i];
    const w = want.arrays[i];
    check(a && a.name === w.name && a.type === w.type && a.length === w.length && a.offset === w.offset && a.bytes === w.bytes, `array ${w.name}`);
  }
  check(h.body === want.body && h.body + TRAILER === size, 'length');
}

// ---------------------------------------------------------------------------------------
// I/O helpers

async function readFull(fh: fs.promises.FileHandle, buf: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) throw new Corrupt('truncated');
    off += bytesRead;
  }
}

async function writeFull(fh: fs.promises.FileHandle, buf: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off);
    if (bytesWritten <= 0) throw new Error('short write');
    off += bytesWritten;
  }
}

/** Reads pieces in order, hashing each while the next read is in flight. */
async function readPieces(fh: fs.promises.FileHandle, pieces: { pos: number; buf: Buffer }[], hash: Hash, signal?: AbortSignal): Promise<void> {
  if (pieces.length === 0) return;
  let pending: Promise<void> | null = readFull(fh, pieces[0].buf, pieces[0].pos);
  try {
    for (let i = 0; i < pieces.length; i++) {
      await pending;
      pending = null;
      throwIfAborted(signal);
      if (i + 1 < pieces.length) pending = readFull(fh, pieces[i + 1].buf, pieces[i + 1].pos);
      hash.update(pieces[i].buf);
    }
  } finally {
    if (pending) await pending.catch(() => undefined);
  }
}

/** Writes pieces in order, hashing each before its write; the hash of piece i+1 overlaps the write of piece i. */
async function writePieces(fh: fs.promises.FileHandle, pieces: { pos: number; buf: Buffer }[], hash: Hash): Promise<void> {
  let pending: Promise<void> | null = null;
  try {
    for (const p of pieces) {
      hash.update(p.buf);
      if (pending) await pending;
      pending = null;
      pending = writeFull(fh, p.buf, p.pos);
    }
    if (pending) await pending;
    pending = null;
  } finally {
    if (pending) await pending.catch(() => undefined);
  }
}

/** The 48-byte preamble: magic, format version, header length and the header's sha256. */
function preamble(magic: Buffer, jsonBuf: Buffer): Buffer {
  const pre = Buffer.alloc(PREAMBLE);
  magic.copy(pre, 0);
  pre.writeUInt32LE(FORMAT_VERSION, 8);
  pre.writeUInt32LE(jsonBuf.length, 12);
  createHash('sha256').update(jsonBuf).digest().copy(pre, 16);
  return pre;
}

/** Reads and checks the preamble and the header JSON of an entry. */
async function readHeader(fh: fs.promises.FileHandle, magic: Buffer, st: fs.Stats): Promise<{ pre: Buffer; jsonBuf: Buffer; header: unknown }> {
  check(st.isFile() && st.size >= PREAMBLE + TRAILER, 'size');
  const pre = Buffer.alloc(PREAMBLE);
  await readFull(fh, pre, 0);
  check(pre.subarray(0, 8).equals(magic), 'magic');
  check(pre.readUInt32LE(8) === FORMAT_VERSION, 'version');
  const J = pre.readUInt32LE(12);
  check(J > 0 && J <= MAX_HEADER && PREAMBLE + J + TRAILER <= st.size, 'header length');
  const jsonBuf = Buffer.alloc(J);
  await readFull(fh, jsonBuf, PREAMBLE);
  check(createHash('sha256').update(jsonBuf).digest().equals(pre.subarray(16, 48)), 'header checksum');
  try {
    return { pre, jsonBuf, header: JSON.parse(jsonBuf.toString('utf8')) };
  } catch {
    throw new Corrupt('header json');
  }
}

/** Reads the body pieces and the trailer, and checks the trailer's length and checksum. */
async function readVerified(fh: fs.promises.FileHandle, head: Buffer[], pieces: { pos: number; buf: Buffer }[], body: number, signal?: AbortSignal): Promise<void> {
  const hash = createHash('sha256');
  for (const b of head) hash.update(b);
  await readPieces(fh, pieces, hash, signal);
  const trailer = Buffer.alloc(TRAILER);
  await readFull(fh, trailer, body);
  check(trailer.subarray(0, 8).equals(END_MAGIC), 'trailer magic');
  check(Number(trailer.readBigUInt64LE(8)) === body, 'trailer length');
  check(hash.digest().equals(trailer.subarray(16, 48)), 'checksum');
}

/** Offsets of a derived entry's float64 arrays after its header, and the body length. */
function derivedLayout(jsonEnd: number, data: Float64Array[]): { arrays: { offset: number; view: Buffer }[]; body: number } {
  let off = align8(jsonEnd);
  const arrays = data.map((a) => {
    const r = { offset: off, view: bytesOf(a) };
    off += a.byteLength;
    return r;
  });
  return { arrays, body: off };
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

/** What a FeatureCache with `memory` keeps: one rows entry and the arrays derived from it. */
interface Memo {
  hex: string;
  rows: ForwardRows;
  derived: Map<string, Float64Array[]>;
}

// ---------------------------------------------------------------------------------------

export class FeatureCache {
  readonly dir: string;
  private sweeping: Promise<unknown>;

  /** With `memory`, see remember(). */
  private memo: Memo | null = null;

  /**
   * `memory`: the last rows entry loaded or stored, and what was derived from it, also stay in
   * this object, so that a long-lived engine (the extension's) skips the disk on the next load of
   * the same rows while the data file's size, mtime, ctime and inode are unchanged. forget() drops it.
   */
  constructor(
    dir: string,
    private readonly opts: { memory?: boolean } = {},
  ) {
    this.dir = nodePath.resolve(dir);
    this.sweeping = this.sweepTemps().catch(() => 0);
  }

  /** Drops what `memory` keeps. */
  forget(): void {
    this.memo = null;
  }

  private remember(hex: string, rows: ForwardRows): void {
    if (this.opts.memory) this.memo = { hex, rows, derived: new Map() };
  }

  /** What `memory` keeps derived from the rows of entry `hex` read from data with this sha256, if those are the rows it keeps. */
  private derivedMemo(hex: string, dataSha256: string): Map<string, Float64Array[]> | undefined {
    return this.memo?.hex === hex && this.memo.rows.summary.sha256 === dataSha256 ? this.memo.derived : undefined;
  }

  /** The remembered rows for this entry, if the data file is provably unchanged since they were read. */
  private async recall(hex: string, dataPath: string): Promise<ForwardRows | null> {
    const m = this.memo;
    if (!m || m.hex !== hex) return null;
    const s = m.rows.summary;
    const st = await fs.promises.stat(dataPath).catch(() => null);
    if (st && st.size === s.size && st.mtimeMs === s.mtimeMs && st.ctimeMs === s.ctimeMs && st.ino === s.ino) return { ...m.rows, table: { ...m.rows.table, path: dataPath } };
    this.memo = null;
    return null;
  }

  /** Entry file path for a key (for tests / diagnostics). */
  entryPath(key: CacheKeyParts): string {
    return nodePath.join(this.dir, `${keyOf(key).hex}.ilcache`);
  }

  /**
   * The cached rows if a valid entry for this key exists and the data file is unchanged
   * (same size and mtimeMs, and same inode and ctime or else same content sha256, as when
   * stored); else null.
   * A corrupt, truncated, foreign or stale entry is a miss and is deleted. Never throws,
   * except CancelledError when `signal` aborts (the entry is then left alone).
   * The returned table.path is `key.dataPath` as given by the caller.
   */
  async load(key: CacheKeyParts, signal?: AbortSignal): Promise<ForwardRows | null> {
    throwIfAborted(signal);
    let k: ReturnType<typeof keyOf>;
    let file: string;
    let fh: fs.promises.FileHandle;
    try {
      k = keyOf(key); // throws only for options that are not JSON data (cycles)
      const kept = await this.recall(k.hex, key.dataPath);
      if (kept) return kept;
      file = nodePath.join(this.dir, `${k.hex}.ilcache`);
      fh = await fs.promises.open(file, 'r');
    } catch {
      return null;
    }
    let st: fs.Stats | null = null;
    let stale = false;
    try {
      st = await fh.stat();
      const size = st.size;
      const { pre, jsonBuf, header } = await readHeader(fh, MAGIC, st);
      const h = header as EntryHeader;
      const jsonEnd = PREAMBLE + jsonBuf.length;
      validateHeader(h, { json: k.json, hex: k.hex, modelSha256: key.modelSha256 }, jsonEnd, size);

      // Is the data file the one the entry was built from? Size and mtime must match. If its inode
      // and ctime (which no write can leave unchanged, and no user can set) match too, the bytes are
      // those that were hashed, as git trusts its index; otherwise the content hash decides.
      stale = true;
      const dst = await fs.promises.stat(key.dataPath);
      check(dst.size === h.summary.size && dst.mtimeMs === h.summary.mtimeMs, 'data file changed');
      if (dst.ctimeMs !== h.summary.ctimeMs || dst.ino !== h.summary.ino) {
        const sha = await hashFile(key.dataPath, signal);
        check(sha === h.summary.sha256, 'data file content changed');
        const dst2 = await fs.promises.stat(key.dataPath);
        check(dst2.size === h.summary.size && dst2.mtimeMs === h.summary.mtimeMs, 'data file changed');
      }
      stale = false;

      const { n, C, D } = h;
      const c = counts(n, C, D);
      const rows: ForwardRows = {
        n,
        C,
        D,
        bias: h.bias,
        h: new Float32Array(c.nD),
        g: new Float64Array(c.nC),
        z: new Float64Array(c.nC),
        loss: new Float64Array(n),
        labels: new Int32Array(n),
        lines: new Int32Array(n),
        offsets: new Float64Array(n + 1),
        table: { ...h.table, path: key.dataPath },
        summary: { rows: n, sha256: h.summary.sha256, size: h.summary.size, mtimeMs: h.summary.mtimeMs, ctimeMs: h.summary.ctimeMs, ino: h.summary.ino },
      };
      // Padding is read into one scratch buffer; the checksum covers it.
      const pieces = bodyPieces(h.arrays.map((a) => ({ offset: a.offset, view: bytesOf(rows[a.name]) })), jsonEnd, Buffer.alloc(8));
      await readVerified(fh, [pre, jsonBuf], pieces, h.body, signal);
      await fh.close().catch(() => undefined);
      this.remember(k.hex, rows);
      return rows;
    } catch (e) {
      await fh.close().catch(() => undefined);
      if (e instanceof CancelledError) throw e;
      if (e instanceof Corrupt || stale || errCode(e) === 'ENOENT') await this.removeIf(file, st);
      return null;
    }
  }

  /**
   * Stores atomically (unique temp file in the cache dir, fsync, rename over the entry).
   * Never throws: returns true if the entry was written, false if anything failed
   * (disk full, permissions, inconsistent rows); the temp file is then removed.
   */
  async store(key: CacheKeyParts, rows: ForwardRows): Promise<boolean> {
    try {
      const { n, C, D } = rows;
      if (!isInt(n) || !isInt(C, 1) || !isInt(D, 1)) return false;
      const c = counts(n, C, D);
      for (const a of ARRAYS) if (rows[a.name]?.length !== c[a.per]) return false;
      if (rows.summary.rows !== n) return false;

      const k = keyOf(key);
      this.remember(k.hex, rows);
      const header: EntryHeader = {
        format: FORMAT_VERSION,
        key: k.json,
        keyHash: k.hex,
        modelSha256: key.modelSha256,
        dataPath: k.dataPath,
        n,
        C,
        D,
        bias: rows.bias,
        table: rows.table,
        summary: { rows: n, sha256: rows.summary.sha256, size: rows.summary.size, mtimeMs: rows.summary.mtimeMs, ctimeMs: rows.summary.ctimeMs, ino: rows.summary.ino },
        arrays: [],
        body: 0,
        created: Date.now(),
      };
      // The layout depends on the JSON length, which depends on the layout's numbers:
      // iterate until the length is stable (twice at most in practice).
      let jsonBuf = Buffer.alloc(0);
      for (let i = 0; i < 8; i++) {
        const { arrays, body } = layout(align8(PREAMBLE + jsonBuf.length), n, C, D);
        header.arrays = arrays;
        header.body = body;
        const next = Buffer.from(JSON.stringify(header), 'utf8');
        if (next.length === jsonBuf.length) {
          jsonBuf = next;
          break;
        }
        jsonBuf = next;
      }
      if (header.arrays[0].offset !== align8(PREAMBLE + jsonBuf.length)) return false;

      const arrays = header.arrays.map((a) => ({ offset: a.offset, view: bytesOf(rows[a.name]) }));
      return await this.writeAtomic(k.hex, MAGIC, jsonBuf, arrays, header.body);
    } catch {
      return false;
    }
  }

  /**
   * Arrays derived from a rows entry (e.g. the head's curvature), if an intact entry `name` exists
   * for this key and was computed from a data file with content sha256 `dataSha256` (the caller's
   * rows); else null. A corrupt or stale entry is deleted. Never throws except CancelledError.
   */
  async loadDerived(key: CacheKeyParts, name: string, dataSha256: string, signal?: AbortSignal): Promise<Float64Array[] | null> {
    throwIfAborted(signal);
    let file: string;
    let fh: fs.promises.FileHandle;
    let json: string;
    let hex: string;
    try {
      if (!NAME_RE.test(name)) return null;
      ({ json, hex } = keyOf(key));
      const kept = this.derivedMemo(hex, dataSha256)?.get(name);
      if (kept) return kept;
      file = nodePath.join(this.dir, `${hex}.${name}.ilcache`);
      fh = await fs.promises.open(file, 'r');
    } catch {
      return null;
    }
    let st: fs.Stats | null = null;
    try {
      st = await fh.stat();
      const { pre, jsonBuf, header } = await readHeader(fh, DERIVED_MAGIC, st);
      const J = jsonBuf.length;
      const h = header as { key: string; name: string; dataSha256: string; lengths: number[] };
      check(h !== null && typeof h === 'object' && h.key === json && h.name === name && h.dataSha256 === dataSha256, 'key');
      check(Array.isArray(h.lengths) && h.lengths.every((l) => isInt(l)), 'lengths');
      const { arrays, body } = derivedLayout(PREAMBLE + J, h.lengths.map((l) => new Float64Array(l)));
      check(body + TRAILER === st.size, 'length');
      await readVerified(fh, [pre, jsonBuf], bodyPieces(arrays, PREAMBLE + J, Buffer.alloc(8)), body, signal);
      await fh.close().catch(() => undefined);
      const data = arrays.map((a) => new Float64Array(a.view.buffer, a.view.byteOffset, a.view.byteLength / 8));
      this.derivedMemo(hex, dataSha256)?.set(name, data);
      return data;
    } catch (e) {
      await fh.close().catch(() => undefined);
      if (e instanceof CancelledError) throw e;
      if (e instanceof Corrupt || errCode(e) === 'ENOENT') await this.removeIf(file, st);
      return null;
    }
  }

  /** Stores arrays derived from the rows of `key` (data sha256 `dataSha256`) atomically; false on any failure. */
  async storeDerived(key: CacheKeyParts, name: string, dataSha256: string, data: Float64Array[]): Promise<boolean> {
    try {
      if (!NAME_RE.test(name)) return false;
      const k = keyOf(key);
      this.derivedMemo(k.hex, dataSha256)?.set(name, data);
      const jsonBuf = Buffer.from(JSON.stringify({ key: k.json, name, dataSha256, lengths: data.map((a) => a.length) }), 'utf8');
      const { arrays, body } = derivedLayout(PREAMBLE + jsonBuf.length, data);
      return await this.writeAtomic(`${k.hex}.${name}`, DERIVED_MAGIC, jsonBuf, arrays, body);
    } catch {
      return false;
    }
  }

  /**
   * Writes an entry (preamble, header JSON, the arrays at their offsets, the checksummed trailer at
   * `body`) to a unique temp file in the cache dir, fsyncs it and renames it over `<base>.ilcache`.
   * Never throws: false (temp file removed) on failure.
   */
  private async writeAtomic(base: string, magic: Buffer, jsonBuf: Buffer, arrays: { offset: number; view: Buffer }[], body: number): Promise<boolean> {
    let fh: fs.promises.FileHandle | null = null;
    let tmp: string | null = null;
    try {
      const pieces = [{ pos: 0, buf: preamble(magic, jsonBuf) }, { pos: PREAMBLE, buf: jsonBuf }, ...bodyPieces(arrays, PREAMBLE + jsonBuf.length, Buffer.alloc(8))];
      await fs.promises.mkdir(this.dir, { recursive: true, mode: 0o700 });
      await this.sweeping;
      this.sweeping = this.sweepTemps().catch(() => 0);
      await this.sweeping;
      tmp = nodePath.join(this.dir, `${base}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
      fh = await fs.promises.open(tmp, 'wx', 0o600);
      const hash = createHash('sha256');
      await writePieces(fh, pieces, hash);
      const trailer = Buffer.alloc(TRAILER);
      END_MAGIC.copy(trailer, 0);
      trailer.writeBigUInt64LE(BigInt(body), 8);
      hash.digest().copy(trailer, 16);
      await writeFull(fh, trailer, body);
      await fh.sync();
      await fh.close();
      fh = null;
      await fs.promises.rename(tmp, nodePath.join(this.dir, `${base}.ilcache`));
      tmp = null;
      await this.syncDir();
      return true;
    } catch {
      return false;
    } finally {
      if (fh) await fh.close().catch(() => undefined);
      if (tmp) await fs.promises.unlink(tmp).catch(() => undefined);
    }
  }

  /** Deletes every entry and temp file in the cache dir (nothing else). Returns the number of files removed. */
  async clear(): Promise<number> {
    this.forget();
    await this.sweeping;
    let names: string[];
    try {
      names = await fs.promises.readdir(this.dir);
    } catch {
      return 0;
    }
    let removed = 0;
    for (const name of names) {
      if (!ENTRY_RE.test(name) && !TEMP_RE.test(name)) continue;
      try {
        await fs.promises.unlink(nodePath.join(this.dir, name));
        removed++;
      } catch {
        // gone already, or not ours to remove
      }
    }
    return removed;
  }

  /** Deletes temp files older than maxAgeMs (default one hour). Returns how many. */
  async sweepTemps(maxAgeMs = TEMP_MAX_AGE_MS): Promise<number> {
    let names: string[];
    try {
      names = await fs.promises.readdir(this.dir);
    } catch {
      return 0;
    }
    const now = Date.now();
    let removed = 0;
    for (const name of names) {
      if (!TEMP_RE.test(name)) continue;
      const p = nodePath.join(this.dir, name);
      try {
        const st = await fs.promises.stat(p);
        if (now - st.mtimeMs > maxAgeMs) {
          await fs.promises.unlink(p);
          removed++;
        }
      } catch {
        // raced with another cleaner or the writer's rename
      }
    }
    return removed;
  }

  /** Removes `file` if it is still the inode we read (not a newer entry renamed over it). */
  private async removeIf(file: string, st: fs.Stats | null): Promise<void> {
    try {
      if (st) {
        const now = await fs.promises.stat(file);
        if (now.ino !== st.ino || now.dev !== st.dev) return;
      }
      await fs.promises.unlink(file);
    } catch {
      // already gone
    }
  }

  /** Makes the rename durable (best effort; not possible on Windows). */
  private async syncDir(): Promise<void> {
    if (process.platform === 'win32') return;
    let dh: fs.promises.FileHandle | null = null;
    try {
      dh = await fs.promises.open(this.dir, 'r');
      await dh.sync();
    } catch {
      // ignore
    } finally {
      await dh?.close().catch(() => undefined);
    }
  }
}
