/**
 * The binary format of cache entries. A rows entry `<hex>.ilcache` holds the per-row forward results
 * of one (model, data file, row-changing options); a derived entry `<hex>.<name>.ilcache` holds
 * float64 arrays computed from those rows. All integers little-endian; every array starts 8-byte
 * aligned.
 *
 *   0   8   magic "ILCACHE1" (rows) or "ILDERIV1" (derived)
 *   8   4   u32 format version (FORMAT_VERSION)
 *   12  4   u32 J = byte length of the header JSON
 *   16  32  sha256 of the header JSON bytes
 *   48  J   header JSON (UTF-8): EntryHeader (rows) or {key, name, dataSha256, lengths} (derived)
 *       ..  zero padding to a multiple of 8
 *       ..  rows: h f32[n·D], g f64[n·C], z f64[n·C], loss f64[n], labels i32[n], lines i32[n],
 *           offsets f64[n+1], and for a source with a row locator (images, Parquet, Arrow) file
 *           i32[n] and, for shards, fileRow i32[n] (the header's `locator` holds the files, their
 *           stamps and hashes); derived: float64 arrays of the listed lengths; each followed by
 *           zero padding to a multiple of 8
 *   B   8   trailer magic "ILCEND\0\0"
 *   B+8 8   u64 B (bytes before the trailer)
 *   B+16 32 sha256 of bytes [0, B)
 *
 * So the file size is exactly B + 48. Arrays are written from, and read straight into, the typed
 * arrays' own memory in chunks (no whole-file buffer, no copies); the sha256 of each chunk is
 * computed while the next chunk's I/O is in flight.
 */
import * as fs from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { throwIfAborted } from '../errors';
import type { LocatorHeader } from '../data/locator';
import type { SourceInfo } from '../data/source';
import type { TableSummary } from '../data/table';

/** 3: rows may carry a row locator (file and fileRow arrays). */
export const FORMAT_VERSION = 3;
export const MAGIC = Buffer.from('ILCACHE1', 'latin1');
export const END_MAGIC = Buffer.from('ILCEND\0\0', 'latin1');
export const PREAMBLE = 48;
export const TRAILER = 48;
const MAX_HEADER = 64 << 20;
/** Bytes per read/write call on array data. */
const CHUNK = 16 << 20;
export const TEMP_MAX_AGE_MS = 60 * 60 * 1000;
export const DERIVED_MAGIC = Buffer.from('ILDERIV1', 'latin1');
/** Entries: `<hex>.ilcache` (rows) and `<hex>.<name>.ilcache` (derived from those rows). */
export const ENTRY_RE = /^[0-9a-f]{64}(\.[a-z0-9-]+)?\.ilcache$/;
export const TEMP_RE = /^[0-9a-f]{64}(\.[a-z0-9-]+)?\.\d+\.[0-9a-f]+\.tmp$/;
export const NAME_RE = /^[a-z0-9-]+$/;

type ArrayName = 'h' | 'g' | 'z' | 'loss' | 'labels' | 'lines' | 'offsets' | 'file' | 'fileRow';
type ArrayType = 'f32' | 'f64' | 'i32';

export const ARRAYS: readonly { name: ArrayName; type: ArrayType; per: 'nD' | 'nC' | 'n' | 'n1' }[] = [
  { name: 'h', type: 'f32', per: 'nD' },
  { name: 'g', type: 'f64', per: 'nC' },
  { name: 'z', type: 'f64', per: 'nC' },
  { name: 'loss', type: 'f64', per: 'n' },
  { name: 'labels', type: 'i32', per: 'n' },
  { name: 'lines', type: 'i32', per: 'n' },
  { name: 'offsets', type: 'f64', per: 'n1' },
];

/** The row locator's arrays, after ARRAYS, in entries that have one. */
export const LOCATOR_ARRAYS: readonly { name: ArrayName; type: ArrayType; per: 'n' }[] = [
  { name: 'file', type: 'i32', per: 'n' },
  { name: 'fileRow', type: 'i32', per: 'n' },
];

/** The arrays of an entry: the rows', and the locator's (fileRow only for shards). */
export function arraysOf(
  locator: LocatorHeader | null | undefined,
): readonly { name: ArrayName; type: ArrayType; per: 'nD' | 'nC' | 'n' | 'n1' }[] {
  if (!locator) return ARRAYS;
  return [...ARRAYS, ...LOCATOR_ARRAYS.filter((a) => a.name === 'file' || locator.fileRow)];
}

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
export interface EntryHeader {
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
  table: SourceInfo;
  summary: TableSummary;
  /** Where the rows are, for a source other than a text table. */
  locator?: LocatorHeader;
  arrays: ArraySpec[];
  /** Bytes before the trailer. */
  body: number;
  created: number;
}

// ---------------------------------------------------------------------------------------
// Layout

export const align8 = (x: number): number => Math.ceil(x / 8) * 8;

export function counts(n: number, C: number, D: number): Record<'nD' | 'nC' | 'n' | 'n1', number> {
  return { nD: n * D, nC: n * C, n, n1: n + 1 };
}

export function layout(
  start: number,
  n: number,
  C: number,
  D: number,
  locator?: LocatorHeader | null,
): { arrays: ArraySpec[]; body: number } {
  const c = counts(n, C, D);
  const arrays: ArraySpec[] = [];
  let off = start;
  for (const a of arraysOf(locator)) {
    const length = c[a.per];
    const bytes = length * BYTES[a.type];
    arrays.push({ name: a.name, type: a.type, length, offset: off, bytes });
    off = align8(off + bytes);
  }
  return { arrays, body: off };
}

/** A Buffer view of a typed array's bytes (no copy). */
export function bytesOf(a: Float32Array | Float64Array | Int32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Non-overlapping pieces of the body after the JSON header: array views (at 8-aligned offsets) and zero pads. */
export function bodyPieces(
  arrays: { offset: number; view: Buffer }[],
  jsonEnd: number,
  padBuf: Buffer,
): { pos: number; buf: Buffer }[] {
  const pieces: { pos: number; buf: Buffer }[] = [];
  let pos = jsonEnd;
  const pad = (to: number): void => {
    if (to > pos) pieces.push({ pos, buf: padBuf.subarray(0, to - pos) });
    pos = to;
  };
  for (const { offset, view: v } of arrays) {
    pad(offset);
    for (let o = 0; o < v.length; o += CHUNK)
      pieces.push({ pos: pos + o, buf: v.subarray(o, Math.min(v.length, o + CHUNK)) });
    pos += v.length;
  }
  pad(align8(pos));
  return pieces;
}

export class Corrupt extends Error {}

export function check(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Corrupt(what);
}

export const isInt = (x: unknown, min = 0): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= min;
const isHex64 = (x: unknown): x is string => typeof x === 'string' && /^[0-9a-f]{64}$/.test(x);

export function validateHeader(
  h: EntryHeader,
  expect: { json: string; hex: string; modelSha256: string },
  jsonEnd: number,
  size: number,
): void {
  check(h !== null && typeof h === 'object', 'header');
  check(h.format === FORMAT_VERSION, 'format');
  check(h.key === expect.json && h.keyHash === expect.hex, 'key');
  check(h.modelSha256 === expect.modelSha256, 'model');
  check(isInt(h.n) && isInt(h.C, 1) && isInt(h.D, 1) && typeof h.bias === 'boolean', 'dims');
  const s = h.summary;
  const isTime = (x: unknown) => typeof x === 'number' && Number.isFinite(x);
  check(
    s !== null &&
      typeof s === 'object' &&
      s.rows === h.n &&
      isHex64(s.sha256) &&
      isInt(s.size) &&
      isTime(s.mtimeMs) &&
      isTime(s.ctimeMs) &&
      isInt(s.ino),
    'summary',
  );
  const t = h.table;
  check(
    t !== null &&
      typeof t === 'object' &&
      typeof t.path === 'string' &&
      typeof t.format === 'string' &&
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
  const l = h.locator;
  check(
    l === undefined ||
      (l !== null &&
        typeof l === 'object' &&
        Array.isArray(l.files) &&
        Array.isArray(l.stamps) &&
        l.stamps.length === l.files.length &&
        typeof l.fileRow === 'boolean' &&
        (l.kind === 'images' || l.kind === 'shards')),
    'locator',
  );
  const want = layout(align8(jsonEnd), h.n, h.C, h.D, l);
  check(Array.isArray(h.arrays) && h.arrays.length === want.arrays.length, 'arrays');
  for (let i = 0; i < want.arrays.length; i++) {
    const a = h.arrays[i];
    const w = want.arrays[i];
    check(
      a &&
        a.name === w.name &&
        a.type === w.type &&
        a.length === w.length &&
        a.offset === w.offset &&
        a.bytes === w.bytes,
      `array ${w.name}`,
    );
  }
  check(h.body === want.body && h.body + TRAILER === size, 'length');
}

// ---------------------------------------------------------------------------------------
// I/O helpers

export async function readFull(fh: fs.promises.FileHandle, buf: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) throw new Corrupt('truncated');
    off += bytesRead;
  }
}

export async function writeFull(fh: fs.promises.FileHandle, buf: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off);
    if (bytesWritten <= 0) throw new Error('short write');
    off += bytesWritten;
  }
}

/** Reads pieces in order, hashing each while the next read is in flight. */
async function readPieces(
  fh: fs.promises.FileHandle,
  pieces: { pos: number; buf: Buffer }[],
  hash: Hash,
  signal?: AbortSignal,
): Promise<void> {
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
export async function writePieces(
  fh: fs.promises.FileHandle,
  pieces: { pos: number; buf: Buffer }[],
  hash: Hash,
): Promise<void> {
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
export function preamble(magic: Buffer, jsonBuf: Buffer): Buffer {
  const pre = Buffer.alloc(PREAMBLE);
  magic.copy(pre, 0);
  pre.writeUInt32LE(FORMAT_VERSION, 8);
  pre.writeUInt32LE(jsonBuf.length, 12);
  createHash('sha256').update(jsonBuf).digest().copy(pre, 16);
  return pre;
}

/** Reads and checks the preamble and the header JSON of an entry. */
export async function readHeader(
  fh: fs.promises.FileHandle,
  magic: Buffer,
  st: fs.Stats,
): Promise<{ pre: Buffer; jsonBuf: Buffer; header: unknown }> {
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
export async function readVerified(
  fh: fs.promises.FileHandle,
  head: Buffer[],
  pieces: { pos: number; buf: Buffer }[],
  body: number,
  signal?: AbortSignal,
): Promise<void> {
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
export function derivedLayout(
  jsonEnd: number,
  data: Float64Array[],
): { arrays: { offset: number; view: Buffer }[]; body: number } {
  let off = align8(jsonEnd);
  const arrays = data.map((a) => {
    const r = { offset: off, view: bytesOf(a) };
    off += a.byteLength;
    return r;
  });
  return { arrays, body: off };
}

export function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}
