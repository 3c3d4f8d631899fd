/**
 * Parquet (hyparquet, with every codec of hyparquet-compressors) and Arrow IPC / Feather v2
 * (apache-arrow; LZ4_FRAME and ZSTD compressed batches through arrowCodecs.ts) files, read one row
 * group or record batch at a time, never the whole file: each column classified (numeric scalar,
 * list of numbers, image struct {bytes, path}, binary, string), and rows delivered as arrays of
 * values in the order of the columns asked for.
 */
import { promises as fsp } from 'node:fs';
import { extname } from 'node:path';
import {
  parquetMetadataAsync,
  parquetRead,
  parquetSchema,
  type AsyncBuffer,
  type FileMetaData,
  type SchemaTree,
} from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { RecordBatchReader, type Field as ArrowField, type RecordBatch } from 'apache-arrow';
import './arrowCodecs';
import { InfluenceError } from '../errors';
import { fileError } from './scan';

export type ColumnKind = 'number' | 'list' | 'image' | 'binary' | 'string' | 'other';

export interface ColumnInfo {
  name: string;
  kind: ColumnKind;
  /** The type as the file names it, for messages. */
  type: string;
}

/** What a Hugging Face `datasets` file says of its columns (the `huggingface` key-value metadata). */
export interface HfFeatures {
  /** Columns of feature type Image. */
  images: string[];
  /** ClassLabel names per column. */
  classNames: Record<string, string[]>;
}

export interface ColumnFile {
  path: string;
  format: 'parquet' | 'arrow';
  columns: ColumnInfo[];
  hf: HfFeatures | null;
  /** Rows, if the file says before reading (Parquet); null for Arrow. */
  rows: number | null;
  /** Row groups / record batches in order, each as row arrays of the named columns' values. */
  batches(columns: string[]): AsyncGenerator<unknown[][]>;
  /** Rows [start, end) of the named columns. */
  rowsAt(columns: string[], start: number, end: number): Promise<unknown[][]>;
  close(): Promise<void>;
}

export function columnarFormat(path: string): 'parquet' | 'arrow' | null {
  const ext = extname(path).toLowerCase();
  if (ext === '.parquet' || ext === '.pq') return 'parquet';
  if (ext === '.arrow' || ext === '.arrows' || ext === '.feather' || ext === '.ipc') return 'arrow';
  return null;
}

export async function openColumns(path: string): Promise<ColumnFile> {
  return columnarFormat(path) === 'arrow' ? openArrow(path) : openParquet(path);
}

function parseHf(kv: { key: string; value?: string }[] | undefined): HfFeatures | null {
  const hf = kv?.find((k) => k.key === 'huggingface')?.value;
  if (!hf) return null;
  try {
    const features =
      (JSON.parse(hf) as { info?: { features?: Record<string, { _type?: string; names?: unknown }> } }).info
        ?.features ?? {};
    const images: string[] = [];
    const classNames: Record<string, string[]> = {};
    for (const [name, f] of Object.entries(features)) {
      if (f?._type === 'Image') images.push(name);
      if (f?._type === 'ClassLabel' && Array.isArray(f.names)) classNames[name] = f.names.map(String);
    }
    return { images, classNames };
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// Parquet

/** An AsyncBuffer over one file handle (positioned reads; no stream per slice). */
async function fileBuffer(path: string): Promise<{ buf: AsyncBuffer; close: () => Promise<void> }> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path, 'r');
  } catch (e) {
    throw fileError(e, path);
  }
  const { size } = await fh.stat();
  return {
    buf: {
      byteLength: size,
      async slice(start: number, end?: number) {
        const stop = Math.min(end ?? size, size);
        const out = new Uint8Array(Math.max(0, stop - start));
        let off = 0;
        while (off < out.length) {
          const { bytesRead } = await fh.read(out, off, out.length - off, start + off);
          if (bytesRead === 0) break;
          off += bytesRead;
        }
        return out.buffer;
      },
    },
    close: () => fh.close(),
  };
}

const NUMERIC = new Set(['BOOLEAN', 'INT32', 'INT64', 'INT96', 'FLOAT', 'DOUBLE']);

function isString(t: SchemaTree): boolean {
  const e = t.element;
  return (
    e.type === 'BYTE_ARRAY' &&
    (e.converted_type === 'UTF8' ||
      e.logical_type?.type === 'STRING' ||
      e.converted_type === 'JSON' ||
      e.converted_type === 'ENUM')
  );
}

function parquetKind(t: SchemaTree): { kind: ColumnKind; type: string } {
  const e = t.element;
  if (t.children.length === 0) {
    if (e.type && NUMERIC.has(e.type) && !e.logical_type?.type?.startsWith('TIMESTAMP'))
      return { kind: 'number', type: e.type.toLowerCase() };
    if (isString(t)) return { kind: 'string', type: 'string' };
    if (e.type === 'BYTE_ARRAY' || e.type === 'FIXED_LEN_BYTE_ARRAY') return { kind: 'binary', type: 'binary' };
    return { kind: 'other', type: String(e.type ?? 'unknown').toLowerCase() };
  }
  const list = e.converted_type === 'LIST' || e.logical_type?.type === 'LIST';
  if (list) {
    // LIST → repeated group → element (a legacy 2-level list has the element directly).
    let item = t.children[0];
    if (item.children.length === 1) item = item.children[0];
    if (item.children.length === 0 && item.element.type && NUMERIC.has(item.element.type))
      return { kind: 'list', type: `list<${item.element.type.toLowerCase()}>` };
    return { kind: 'other', type: 'list' };
  }
  const names = t.children.map((c) => c.element.name);
  if (names.includes('bytes') && t.children.find((c) => c.element.name === 'bytes')!.element.type === 'BYTE_ARRAY')
    return { kind: 'image', type: `struct<${names.join(', ')}>` };
  return { kind: 'other', type: `struct<${names.join(', ')}>` };
}

async function openParquet(path: string): Promise<ColumnFile> {
  const { buf, close } = await fileBuffer(path);
  let metadata: FileMetaData;
  try {
    metadata = await parquetMetadataAsync(buf);
  } catch (e) {
    await close();
    throw new InfluenceError('PARQUET_INVALID', `not a readable Parquet file: ${(e as Error).message}`, { file: path });
  }
  const tree = parquetSchema(metadata);
  const columns = tree.children.map((c) => ({ name: c.element.name, ...parquetKind(c) }));
  const groups: [number, number][] = [];
  let at = 0;
  for (const rg of metadata.row_groups) {
    const n = Number(rg.num_rows);
    groups.push([at, at + n]);
    at += n;
  }
  const read = async (cols: string[], rowStart: number, rowEnd: number): Promise<unknown[][]> => {
    let rows: unknown[][] = [];
    try {
      await parquetRead({
        file: buf,
        metadata,
        columns: cols,
        rowStart,
        rowEnd,
        compressors,
        utf8: false,
        onComplete: (r) => (rows = r),
      });
    } catch (e) {
      throw new InfluenceError(
        'PARQUET_INVALID',
        `cannot read rows ${rowStart}–${rowEnd - 1}: ${(e as Error).message}`,
        { file: path },
      );
    }
    // Strings come as bytes with utf8 off (which keeps binary columns intact): decode the string columns.
    const text = cols.map((c) => columns.find((x) => x.name === c)?.kind === 'string');
    if (text.some(Boolean)) {
      const dec = new TextDecoder();
      for (const r of rows)
        for (let j = 0; j < cols.length; j++)
          if (text[j] && r[j] instanceof Uint8Array) r[j] = dec.decode(r[j] as Uint8Array);
    }
    for (const r of rows) {
      for (let j = 0; j < cols.length; j++) {
        const v = r[j] as { path?: unknown } | null;
        // An image struct's path is text.
        if (v && typeof v === 'object' && !(v instanceof Uint8Array) && v.path instanceof Uint8Array)
          v.path = new TextDecoder().decode(v.path);
      }
    }
    return rows;
  };
  return {
    path,
    format: 'parquet',
    columns,
    hf: parseHf(metadata.key_value_metadata),
    rows: at,
    async *batches(cols) {
      for (const [a, b] of groups) if (b > a) yield await read(cols, a, b);
    },
    rowsAt: (cols, start, end) => read(cols, start, end),
    close,
  };
}

// ---------------------------------------------------------------------------------------
// Arrow IPC

function arrowKind(f: ArrowField): { kind: ColumnKind; type: string } {
  const t = f.type;
  const type = String(t);
  const id = t.typeId;
  // apache-arrow Type ids: Int 2, Float 3, Binary 4, Utf8 5, Bool 6, Decimal 7, List 12, Struct 13, FixedSizeBinary 15, FixedSizeList 16, LargeBinary 19, LargeUtf8 20.
  if (id === 2 || id === 3 || id === 6) return { kind: 'number', type };
  if (id === 5 || id === 20) return { kind: 'string', type };
  if (id === 4 || id === 19 || id === 15) return { kind: 'binary', type };
  if (id === 12 || id === 16) {
    const child = (t as unknown as { children: ArrowField[] }).children?.[0];
    const cid = child?.type.typeId;
    return cid === 2 || cid === 3 || cid === 6 ? { kind: 'list', type } : { kind: 'other', type };
  }
  if (id === 13) {
    const kids = (t as unknown as { children: ArrowField[] }).children ?? [];
    const bytes = kids.find((k) => k.name === 'bytes');
    if (bytes && (bytes.type.typeId === 4 || bytes.type.typeId === 19)) return { kind: 'image', type };
  }
  return { kind: 'other', type };
}

function arrowValue(v: unknown): unknown {
  if (v === null || v === undefined || typeof v !== 'object') return v;
  if (v instanceof Uint8Array) return v;
  const o = v as { toArray?: () => unknown; toJSON?: () => unknown };
  // A list cell is a Vector; a struct cell is a StructRow (read its fields).
  if (typeof (o as { get?: unknown }).get === 'function' && typeof o.toArray === 'function' && 'length' in o)
    return Array.from(o.toArray() as ArrayLike<number>);
  if (typeof o.toJSON === 'function') return o.toJSON();
  return v;
}

function batchRows(rb: RecordBatch, cols: string[], start = 0, end = rb.numRows): unknown[][] {
  const vecs = cols.map((c) => rb.getChild(c));
  const rows: unknown[][] = [];
  for (let i = start; i < end; i++) rows.push(vecs.map((v) => (v ? arrowValue(v.get(i)) : undefined)));
  return rows;
}

async function openArrow(path: string): Promise<ColumnFile> {
  const open = async () => {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path, 'r');
    } catch (e) {
      throw fileError(e, path);
    }
    try {
      const reader = await RecordBatchReader.from(fh);
      await reader.open();
      return { reader, fh };
    } catch (e) {
      await fh.close();
      throw new InfluenceError('ARROW_INVALID', `not a readable Arrow IPC / Feather v2 file: ${(e as Error).message}`, {
        file: path,
      });
    }
  };
  const first = await open();
  const schema = first.reader.schema;
  await first.fh.close();
  const columns = schema.fields.map((f) => ({ name: f.name, ...arrowKind(f) }));
  const md = [...(schema.metadata ?? new Map<string, string>()).entries()].map(([key, value]) => ({ key, value }));
  async function* batches(cols: string[]): AsyncGenerator<unknown[][]> {
    const { reader, fh } = await open();
    try {
      for await (const rb of reader) if (rb.numRows > 0) yield batchRows(rb, cols);
    } catch (e) {
      if (e instanceof InfluenceError) throw e;
      throw new InfluenceError('ARROW_INVALID', `cannot read a record batch: ${(e as Error).message}`, { file: path });
    } finally {
      await fh.close();
    }
  }
  return {
    path,
    format: 'arrow',
    columns,
    hf: parseHf(md),
    rows: null,
    batches,
    async rowsAt(cols, start, end) {
      const out: unknown[][] = [];
      let at = 0;
      for await (const rows of batches(cols)) {
        const a = Math.max(start - at, 0);
        const b = Math.min(end - at, rows.length);
        if (a < b) out.push(...rows.slice(a, b));
        at += rows.length;
        if (at >= end) break;
      }
      return out;
    },
    close: async () => undefined,
  };
}
