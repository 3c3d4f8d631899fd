/**
 * Streaming reader for tabular training data: CSV / TSV (RFC 4180 quoting) and JSONL.
 *
 * The file is never held as one string: it is read in chunks (1 MiB by default) and scanned at
 * the byte level (scan.ts), so record byte offsets are exact (`clean` copies kept records byte for
 * byte). The read size grows with a pending record, so even huge records cost amortised linear time.
 */

import { createHash } from 'node:crypto';
import * as nodePath from 'node:path';
import { InfluenceError, throwIfAborted, type Progress } from '../errors';
import { parseIntBytes, parseNumber, parseNumBytes } from './numbers';
import {
  ChunkReader,
  COMMA,
  CsvScanner,
  DONE,
  fileChanged,
  JsonlScanner,
  NEED,
  openFile,
  rescan,
  TAB,
  type FileStamp,
  type Opener,
  type Scanner,
} from './scan';
import { listNames, show } from './words';

export type TableFormat = 'csv' | 'tsv' | 'jsonl';

export interface TableOptions {
  /** Default 'label'. */
  labelColumn?: string;
  /** Default: every other column in file order. */
  features?: string[];
  /** Columns that are not features (an index, an id, a note): left out of the default features. Each must exist. */
  ignoreColumns?: string[];
  /**
   * A column taken for a row index (left out of the features like ignoreColumns): its values must
   * be distinct integers, which the pass checks. Set by the engine when it guesses one (data/choose.ts).
   */
  indexColumn?: string;
  /** Class names; string labels are mapped through them (index = class id). */
  classes?: string[] | null;
  /** If given, integer labels must be in [0, numClasses). */
  numClasses?: number;
  /** Default true. If false and the label column is absent, labels are -1. */
  requireLabel?: boolean;
  /** Rows per batch, default 4096 (fewer when so many rows would hold more than 2^26 feature values). */
  batchSize?: number;
  /** Default from the extension: .csv, .tsv/.tab, .jsonl/.ndjson. */
  format?: TableFormat;
  signal?: AbortSignal;
  /** Called as onProgress('read', bytesDone, totalBytes) once per chunk read. */
  onProgress?: Progress;
  /** @internal Bytes per read (default 1 MiB). Tests use tiny values to split fields across reads. */
  chunkSize?: number;
  /** @internal Where the bytes come from (default: the file at the path). */
  open?: Opener;
  /** Features as float64 (for a model with a float64 input) rather than rounded to float32. */
  float64?: boolean;
  /**
   * A manifest's image path column: its text is returned per row (Batch.paths) and the table has no
   * feature columns (the images hold the features).
   */
  pathColumn?: string;
}

export interface TableInfo {
  path: string;
  format: TableFormat;
  /** Header names (CSV/TSV) or keys of the first JSONL object, in order. */
  columns: string[];
  labelColumn: string;
  hasLabel: boolean;
  /** Chosen feature columns in order. */
  featureNames: string[];
  /** Flattened width F (JSONL arrays flatten; CSV = featureNames.length). */
  featureCount: number;
  size: number;
  mtimeMs: number;
  /** Status change time and inode at open: with size and mtime, what the cache trusts without rehashing. */
  ctimeMs: number;
  ino: number;
}

export interface Batch {
  /** 0-based index of the first row in the batch. */
  start: number;
  count: number;
  /** count*F, row-major. */
  features: Float32Array | Float64Array;
  labels: Int32Array;
  /** 1-based line on which each record starts. */
  lines: Int32Array;
  /**
   * count+1 byte offsets: record r spans [offsets[r], offsets[r+1]), including its line
   * terminator and any blank lines that follow it (blank lines before the first record
   * belong to the header part [0, offsets[0]) of the file).
   */
  offsets: Float64Array;
  /** With the pathColumn option: each row's text in that column. */
  paths?: string[];
}

export interface TableSummary {
  rows: number;
  /** Hex SHA-256 of all bytes read. */
  sha256: string;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

// ---------------------------------------------------------------------------------------
// Constants and small helpers

const DEFAULT_CHUNK = 1 << 20;
const DEFAULT_BATCH = 4096;
/** At most this many feature values in a batch (256 MB as float32): wider rows come in batches of fewer than batchSize. */
const MAX_BATCH_VALUES = 1 << 26;
/** A batch's arrays are first made for this many values, and grow with its rows up to the batch size. */
const FIRST_BATCH_VALUES = 1 << 20;
const MAX_INT32 = 2147483647;

/** The rows a text file of `fileBytes` bytes holds, judged from its first batch's bytes per row. */
export function expectedRows(batch: Batch, fileBytes: number): number {
  const bytesPerRow = (batch.offsets[batch.count] - batch.offsets[0]) / batch.count;
  return (fileBytes - batch.offsets[0]) / Math.max(bytesPerRow, 1);
}

/** The format implied by the file extension, or null. */
export function formatFromPath(path: string): TableFormat | null {
  const ext = nodePath.extname(path).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.tsv' || ext === '.tab') return 'tsv';
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  return null;
}

export function resolveFormat(path: string, format: TableFormat | undefined): TableFormat {
  if (format !== undefined) {
    if (format !== 'csv' && format !== 'tsv' && format !== 'jsonl') {
      throw new InfluenceError('BAD_OPTION', `unknown table format ${show(String(format))}; use csv, tsv or jsonl`);
    }
    return format;
  }
  const f = formatFromPath(path);
  if (f === null) {
    throw new InfluenceError(
      'UNSUPPORTED_FORMAT',
      `cannot tell the format of ${path} from its extension; use .csv, .tsv/.tab or .jsonl/.ndjson`,
      { file: path },
    );
  }
  return f;
}

// ---------------------------------------------------------------------------------------
// Header / first record

interface Probe {
  st: FileStamp;
  columns: string[];
  /** JSONL only: the first object. */
  first: Record<string, unknown> | null;
}

async function probeFile(path: string, format: TableFormat, chunkSize: number, open: Opener): Promise<Probe> {
  const { src, st } = await open(path);
  try {
    const rd = new ChunkReader(src, path, chunkSize, null, null);
    const sc = format === 'jsonl' ? new JsonlScanner(path) : new CsvScanner(path, format === 'tsv' ? TAB : COMMA);
    let r = sc.scan(rd.buf, rd.end, rd.eof);
    if (r === NEED) r = await rescan(sc, rd);
    if (r === DONE) {
      throw new InfluenceError('EMPTY_FILE', `${path} is empty`, { file: path });
    }
    if (sc instanceof JsonlScanner) {
      const first = sc.object(rd.buf);
      return { st, columns: Object.keys(first), first };
    }
    const csv = sc as CsvScanner;
    const columns: string[] = [];
    const seen = new Map<string, number>();
    for (let k = 0; k < csv.n; k++) {
      const name = csv.text(rd.buf, k).trim();
      const prev = seen.get(name);
      if (prev !== undefined) {
        const { line, col } = csv.place(rd.buf, csv.fr[k]);
        throw new InfluenceError(
          'CSV_DUPLICATE_COLUMN',
          `column name ${show(name)} appears twice in the header (columns ${prev + 1} and ${k + 1})`,
          { file: path, line, col },
        );
      }
      seen.set(name, k);
      columns.push(name);
    }
    return { st, columns, first: null };
  } finally {
    await src.close();
  }
}

/** What the column rules (choose.ts) look at: the format, the column names and, for JSONL, the first object. */
export async function probeTable(
  path: string,
  opts: Pick<TableOptions, 'format' | 'chunkSize' | 'open'> = {},
): Promise<{ format: TableFormat; columns: string[]; first: Record<string, unknown> | null }> {
  const format = resolveFormat(path, opts.format);
  const { columns, first } = await probeFile(path, format, opts.chunkSize ?? DEFAULT_CHUNK, opts.open ?? openFile);
  return { format, columns, first };
}

/** Column names only (for a UI column picker). */
export async function readHeader(path: string, format?: TableFormat): Promise<string[]> {
  const f = resolveFormat(path, format);
  return (await probeFile(path, f, DEFAULT_CHUNK, openFile)).columns;
}

function positiveInt(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new InfluenceError('BAD_OPTION', `${name} must be a positive integer, got ${String(v)}`);
  }
  return v;
}

/**
 * Calls `leaf` on each leaf of a (nested) JSON value in order: arrays flatten, anything else is
 * one leaf. An explicit stack, since JSON.parse takes nesting deeper than the call stack.
 */
function eachLeaf(v: unknown, leaf: (x: unknown) => void): void {
  if (!Array.isArray(v)) {
    leaf(v);
    return;
  }
  const arrays: unknown[][] = [v];
  const next: number[] = [0];
  while (arrays.length > 0) {
    const top = arrays.length - 1;
    const a = arrays[top];
    const i = next[top];
    if (i === a.length) {
      arrays.pop();
      next.pop();
      continue;
    }
    next[top] = i + 1;
    const x = a[i];
    if (Array.isArray(x)) {
      arrays.push(x);
      next.push(0);
    } else {
      leaf(x);
    }
  }
}

/** The array, copied into a longer one. */
function grown(a: Int32Array, len: number): Int32Array<ArrayBuffer> {
  const b = new Int32Array(len);
  b.set(a);
  return b;
}

/** The first name that is listed twice, or undefined. */
function firstDuplicate(names: readonly string[]): string | undefined {
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) return n;
    seen.add(n);
  }
  return undefined;
}

/** Number of leaves of a (nested) JSON value: arrays flatten, anything else counts 1. */
export function widthOf(v: unknown): number {
  let n = 0;
  eachLeaf(v, () => n++);
  return n;
}

/** A JSON value as a message quotes it (JSON.stringify recurses, so a deeply nested one is shown by its start). */
function jsonText(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return Array.isArray(v) ? '[[[…' : '{…';
  }
}

// ---------------------------------------------------------------------------------------
// Reader

export class TableReader {
  readonly info: TableInfo;

  private readonly labelCol: number;
  private readonly featCols: Int32Array;
  /** JSONL: offset and width of each feature key within a row. */
  private readonly featOff: Int32Array;
  private readonly featWidth: Int32Array;
  private readonly classMap: Map<string, number> | null;
  private readonly classNames: string[] | null;
  private readonly limit: number;
  private readonly batchSize: number;
  private readonly chunkSize: number;
  private readonly signal: AbortSignal | undefined;
  private readonly onProgress: Progress | undefined;
  private readonly open: Opener;
  private readonly float64: boolean;
  /** The pathColumn option's column (-1: none) and the text it held in the last row parsed. */
  private readonly pathCol: number;
  private lastPath = '';
  /** The row-index column's check (TableOptions.indexColumn), or null. */
  private readonly index: IndexCheck | null;
  private started = false;
  private result: TableSummary | null = null;

  private constructor(
    info: TableInfo,
    labelCol: number,
    featCols: number[],
    widths: number[],
    indexCol: number,
    opts: TableOptions,
    batchSize: number,
    chunkSize: number,
  ) {
    this.info = info;
    this.pathCol = opts.pathColumn === undefined ? -1 : info.columns.indexOf(opts.pathColumn);
    this.labelCol = labelCol;
    this.index = indexCol >= 0 ? new IndexCheck(indexCol, info.columns[indexCol], info.path) : null;
    this.featCols = Int32Array.from(featCols);
    this.featWidth = Int32Array.from(widths);
    this.featOff = new Int32Array(widths.length);
    for (let k = 1; k < widths.length; k++) this.featOff[k] = this.featOff[k - 1] + widths[k - 1];
    const classes = opts.classes ?? null;
    this.classNames = classes;
    if (classes) {
      this.classMap = new Map();
      classes.forEach((c, i) => this.classMap!.set(c.trim(), i));
    } else {
      this.classMap = null;
    }
    this.limit = Math.min(opts.numClasses ?? classes?.length ?? MAX_INT32 + 1, MAX_INT32 + 1);
    this.batchSize = batchSize;
    this.chunkSize = chunkSize;
    this.signal = opts.signal;
    this.onProgress = opts.onProgress;
    this.open = opts.open ?? openFile;
    this.float64 = opts.float64 ?? false;
  }

  /** Stats the file, reads only the header / first record and resolves the columns. */
  static async open(path: string, opts: TableOptions = {}): Promise<TableReader> {
    const labelColumn = opts.labelColumn ?? 'label';
    if (typeof labelColumn !== 'string') throw new InfluenceError('BAD_OPTION', 'labelColumn must be a string');
    const batchSize = positiveInt(opts.batchSize ?? DEFAULT_BATCH, 'batchSize');
    const chunkSize = positiveInt(opts.chunkSize ?? DEFAULT_CHUNK, 'chunkSize');
    if (opts.numClasses !== undefined) positiveInt(opts.numClasses, 'numClasses');
    if (opts.features !== undefined) {
      if (!Array.isArray(opts.features) || opts.features.length === 0) {
        throw new InfluenceError('BAD_OPTION', 'features must name at least one column');
      }
      if (opts.features.includes(labelColumn)) {
        throw new InfluenceError('BAD_OPTION', `the label column ${show(labelColumn)} cannot also be a feature`);
      }
      const dup = firstDuplicate(opts.features);
      if (dup !== undefined) throw new InfluenceError('BAD_OPTION', `feature column ${show(dup)} is listed twice`);
    }
    const skipped = [...(opts.ignoreColumns ?? []), ...(opts.indexColumn !== undefined ? [opts.indexColumn] : [])];
    if (opts.ignoreColumns !== undefined && !Array.isArray(opts.ignoreColumns))
      throw new InfluenceError('BAD_OPTION', 'ignoreColumns must be a list of column names');
    for (const c of skipped) {
      if (typeof c !== 'string') throw new InfluenceError('BAD_OPTION', 'ignored column names must be strings');
      if (c === labelColumn)
        throw new InfluenceError('BAD_OPTION', `the label column ${show(labelColumn)} cannot also be ignored`);
      if (opts.features?.includes(c))
        throw new InfluenceError('BAD_OPTION', `column ${show(c)} is both a feature and ignored`);
    }
    if (opts.classes) {
      if (opts.classes.length === 0) throw new InfluenceError('BAD_OPTION', 'classes is empty');
      const names = opts.classes.map((c) => c.trim());
      const dup = firstDuplicate(names);
      if (dup !== undefined) throw new InfluenceError('BAD_OPTION', `class ${show(dup)} is listed twice`);
    }
    throwIfAborted(opts.signal);
    const format = resolveFormat(path, opts.format);
    const probe = await probeFile(path, format, chunkSize, opts.open ?? openFile);
    const { columns } = probe;
    // Column numbers by name (names are unique: a CSV header with a name twice is an error, JSONL
    // keys are an object's): lookups by name must not cost a scan of a header of 100k columns each.
    const columnOf = new Map<string, number>();
    columns.forEach((c, i) => columnOf.set(c, i));

    const labelCol = columnOf.get(labelColumn) ?? -1;
    const requireLabel = opts.requireLabel ?? true;
    if (labelCol < 0 && requireLabel) {
      throw new InfluenceError(
        'LABEL_COLUMN_MISSING',
        `label column ${show(labelColumn)} not found; available columns: ${listNames(columns, 50)}; name the label column with --label-column`,
        { file: path },
      );
    }
    const missingSkipped = skipped.filter((c) => !columns.includes(c));
    if (missingSkipped.length > 0) {
      throw new InfluenceError(
        'FEATURE_COLUMN_MISSING',
        `column${missingSkipped.length > 1 ? 's' : ''} to ignore ${missingSkipped.map((m) => show(m)).join(', ')} not found; available columns: ${listNames(columns, 50)}`,
        { file: path },
      );
    }
    let featureNames: string[];
    if (opts.pathColumn !== undefined) {
      if (!columnOf.has(opts.pathColumn)) {
        throw new InfluenceError(
          'IMAGE_COLUMN_MISSING',
          `image path column ${show(opts.pathColumn)} not found; available columns: ${listNames(columns, 50)}`,
          { file: path },
        );
      }
      featureNames = [];
    } else if (opts.features !== undefined) {
      const missing = opts.features.filter((f) => !columnOf.has(f));
      if (missing.length > 0) {
        throw new InfluenceError(
          'FEATURE_COLUMN_MISSING',
          `feature column${missing.length > 1 ? 's' : ''} ${missing.map((m) => show(m)).join(', ')} not found; available columns: ${listNames(columns, 50)}`,
          { file: path },
        );
      }
      featureNames = [...opts.features];
    } else {
      const skip = new Set(skipped);
      featureNames = columns.filter((c, i) => i !== labelCol && !skip.has(c));
      if (featureNames.length === 0) {
        throw new InfluenceError(
          'FEATURE_COLUMN_MISSING',
          `no feature columns are left (columns: ${listNames(columns, 50)})`,
          { file: path },
        );
      }
    }
    const featCols = featureNames.map((f) => columnOf.get(f)!);
    const widths = probe.first ? featureNames.map((f) => widthOf(probe.first![f])) : featureNames.map(() => 1);
    const info: TableInfo = {
      path,
      format,
      columns,
      labelColumn,
      hasLabel: labelCol >= 0,
      featureNames,
      featureCount: widths.reduce((a, w) => a + w, 0),
      size: probe.st.size,
      mtimeMs: probe.st.mtimeMs,
      ctimeMs: probe.st.ctimeMs,
      ino: probe.st.ino,
    };
    const indexCol = opts.indexColumn !== undefined ? columns.indexOf(opts.indexColumn) : -1;
    return new TableReader(info, labelCol, featCols, widths, indexCol, opts, batchSize, chunkSize);
  }

  /** Valid after batches() has finished. */
  summary(): TableSummary {
    if (!this.result) throw new Error('TableReader.summary() is only available after batches() has finished');
    return this.result;
  }

  private changed(st: FileStamp): boolean {
    return st.size !== this.info.size || st.mtimeMs !== this.info.mtimeMs || st.ctimeMs !== this.info.ctimeMs;
  }

  /** Streams all records; may be called once. */
  async *batches(): AsyncGenerator<Batch> {
    if (this.started) throw new Error('TableReader.batches() may be called only once');
    this.started = true;
    const info = this.info;
    const path = info.path;
    throwIfAborted(this.signal);
    const { src } = await this.open(path);
    try {
      if (this.changed(await src.stat())) throw fileChanged(path);
      const hash = createHash('sha256');
      const rd = new ChunkReader(src, path, this.chunkSize, hash, {
        size: info.size,
        signal: this.signal,
        onProgress: this.onProgress,
      });
      this.onProgress?.('read', 0, info.size);
      const jsonl = info.format === 'jsonl';
      const sc: Scanner = jsonl ? new JsonlScanner(path) : new CsvScanner(path, info.format === 'tsv' ? TAB : COMMA);
      let r: number;
      if (!jsonl) {
        r = sc.scan(rd.buf, rd.end, rd.eof);
        if (r === NEED) r = await rescan(sc, rd);
        if (r === DONE || (sc as CsvScanner).n !== info.columns.length) throw fileChanged(path);
        sc.advance();
      }
      const F = info.featureCount;
      // Rows so wide that a whole batch of them would not fit come in smaller batches; and a
      // batch's arrays grow with its rows, so a file of a few very wide rows allocates only those.
      const B = Math.max(1, Math.min(this.batchSize, Math.floor(MAX_BATCH_VALUES / Math.max(F, 1))));
      let cap = Math.max(1, Math.min(B, Math.floor(FIRST_BATCH_VALUES / Math.max(F, 1))));
      const make = (len: number) => (this.float64 ? new Float64Array(len) : new Float32Array(len));
      let features = make(cap * F);
      let labels = new Int32Array(cap);
      let lines = new Int32Array(cap);
      let offsets = new Float64Array(cap + 1);
      let paths: string[] | undefined = this.pathCol >= 0 ? [] : undefined;
      let count = 0;
      let start = 0;
      for (;;) {
        r = sc.scan(rd.buf, rd.end, rd.eof);
        if (r === NEED) r = await rescan(sc, rd);
        if (r === DONE) break;
        const recAbs = rd.base + sc.recStart;
        if (count === B) {
          offsets[B] = recAbs;
          yield { start, count, features, labels, lines, offsets, paths };
          throwIfAborted(this.signal);
          start += count;
          count = 0;
          features = make(B * F);
          labels = new Int32Array(B);
          lines = new Int32Array(B);
          offsets = new Float64Array(B + 1);
          paths = paths && [];
        } else if (count === cap) {
          cap = Math.min(B, cap * 2);
          const f = make(cap * F);
          f.set(features);
          features = f;
          labels = grown(labels, cap);
          lines = grown(lines, cap);
          const o = new Float64Array(cap + 1);
          o.set(offsets);
          offsets = o;
        }
        offsets[count] = recAbs;
        lines[count] = sc.recLine;
        if (jsonl) this.jsonlRow(sc as JsonlScanner, rd.buf, features, count * F, labels, count);
        else this.csvRow(sc as CsvScanner, rd.buf, features, count * F, labels, count);
        paths?.push(this.lastPath);
        count++;
        sc.advance();
      }
      const endAbs = rd.base + sc.pos;
      const st = await src.stat();
      if (this.changed(st) || rd.total !== info.size || endAbs !== info.size) throw fileChanged(path);
      this.index?.finish(info.featureCount);
      this.result = {
        rows: start + count,
        sha256: hash.digest('hex'),
        size: info.size,
        mtimeMs: info.mtimeMs,
        ctimeMs: info.ctimeMs,
        ino: info.ino,
      };
      throwIfAborted(this.signal);
      if (count > 0) {
        offsets[count] = endAbs;
        yield {
          start,
          count,
          features: features.length === count * F ? features : features.slice(0, count * F),
          labels: labels.length === count ? labels : labels.slice(0, count),
          lines: lines.length === count ? lines : lines.slice(0, count),
          offsets: offsets.length === count + 1 ? offsets : offsets.slice(0, count + 1),
          paths,
        };
      }
    } catch (e) {
      // A parse error in a file that is being rewritten is better reported as the change.
      if (e instanceof InfluenceError && e.code !== 'FILE_CHANGED') {
        let st: FileStamp | null;
        try {
          st = await src.stat();
        } catch {
          st = null;
        }
        if (st === null || this.changed(st)) throw fileChanged(path);
      }
      throw e;
    } finally {
      await src.close();
    }
  }

  // -- CSV / TSV rows --------------------------------------------------------------------

  private csvRow(
    sc: CsvScanner,
    b: Buffer,
    out: Float32Array | Float64Array,
    o: number,
    labels: Int32Array,
    li: number,
  ): void {
    const H = this.info.columns.length;
    if (sc.n !== H) {
      throw new InfluenceError(
        'CSV_RAGGED_ROW',
        `expected ${H} field${H === 1 ? '' : 's'} (as in the header) but found ${sc.n}`,
        { file: sc.file, line: sc.recLine },
      );
    }
    const cols = this.featCols;
    const F = cols.length;
    const fs0 = sc.fs;
    const fe = sc.fe;
    const fq = sc.fq;
    for (let k = 0; k < F; k++) {
      const c = cols[k];
      const x = fq[c] === 2 ? parseNumber(sc.text(b, c)) : parseNumBytes(b, fs0[c], fe[c]);
      const v = this.float64 ? x : Math.fround(x);
      if (v - v !== 0) {
        const { line, col } = sc.place(b, sc.fr[c]);
        throw this.badValue(this.info.featureNames[k], sc.text(b, c), { file: sc.file, line, col });
      }
      out[o + k] = v;
    }
    if (this.pathCol >= 0) this.lastPath = sc.text(b, this.pathCol);
    const ix = this.index;
    if (ix) {
      const c = ix.col;
      const text = sc.text(b, c);
      ix.add(parseNumber(text), text, sc.recLine, this.info.featureCount, () => sc.place(b, sc.fr[c]).col);
    }
    const lc = this.labelCol;
    if (lc < 0) {
      labels[li] = -1;
      return;
    }
    let id = fq[lc] === 2 ? -1 : parseIntBytes(b, fs0[lc], fe[lc]);
    if (id < 0 || id >= this.limit) {
      const { line, col } = sc.place(b, sc.fr[lc]);
      id = this.labelFromText(sc.text(b, lc), { file: sc.file, line, col });
    }
    labels[li] = id;
  }

  private badValue(column: string, text: string, place: { file: string; line: number; col?: number }): InfluenceError {
    const t = text.trim();
    if (t === '') return new InfluenceError('FEATURE_NOT_NUMERIC', `feature ${show(column)} is empty`, place);
    const bare = t.toLowerCase().replace(/^[+-]/, '');
    if (bare === 'nan' || bare === 'inf' || bare === 'infinity') {
      return new InfluenceError(
        'FEATURE_NOT_FINITE',
        `feature ${show(column)} has non-finite value ${show(t)} (NaN and infinities are not allowed)`,
        place,
      );
    }
    if (!Number.isNaN(parseNumber(t))) {
      return new InfluenceError(
        'FEATURE_NOT_FINITE',
        this.float64
          ? `feature ${show(column)} value ${show(t)} overflows float64`
          : `feature ${show(column)} value ${show(t)} overflows float32 (max about 3.4e38)`,
        place,
      );
    }
    return new InfluenceError('FEATURE_NOT_NUMERIC', `feature ${show(column)} has non-numeric value ${show(t)}`, place);
  }

  /** Full label rules for a label text; returns the class id or throws. */
  private labelFromText(raw: string, place: { file: string; line: number; col?: number }): number {
    const text = raw.trim();
    if (text === '') throw new InfluenceError('LABEL_INVALID', 'label is empty', place);
    const num = parseNumber(text);
    let id: number;
    if (Number.isInteger(num)) {
      id = num;
    } else if (this.classMap) {
      const c = this.classMap.get(text);
      if (c === undefined) {
        throw new InfluenceError(
          'LABEL_UNKNOWN_CLASS',
          `label ${show(text)} is not one of the ${this.classNames!.length} known classes: ${listNames(this.classNames!, 20)}`,
          place,
        );
      }
      id = c;
    } else {
      throw new InfluenceError(
        'LABEL_INVALID',
        `label ${show(text)} is not an integer class id; pass --classes to map class names to ids`,
        place,
      );
    }
    if (id < 0 || id >= this.limit || id > MAX_INT32) {
      const range = this.limit <= MAX_INT32 ? `0..${this.limit - 1}` : `0..${MAX_INT32}`;
      throw new InfluenceError(
        'LABEL_OUT_OF_RANGE',
        `label ${show(text)} is out of range: valid class ids are ${range}`,
        place,
      );
    }
    return id === 0 ? 0 : id; // normalise -0
  }

  // -- JSONL rows ------------------------------------------------------------------------

  private jsonlRow(
    sc: JsonlScanner,
    b: Buffer,
    out: Float32Array | Float64Array,
    o: number,
    labels: Int32Array,
    li: number,
  ): void {
    const obj = sc.object(b);
    const place = { file: sc.file, line: sc.recLine };
    const names = this.info.featureNames;
    for (let k = 0; k < names.length; k++) {
      const key = names[k];
      if (!Object.hasOwn(obj, key)) throw this.keysDiffer(key, place);
      const v = obj[key];
      const w = this.featWidth[k];
      const base = o + this.featOff[k];
      if (typeof v === 'number') {
        if (w !== 1) throw this.shape(key, 1, w, place);
        const f = this.float64 ? v : Math.fround(v);
        if (f - f !== 0) throw this.badValue(key, String(v), place);
        out[base] = f;
      } else {
        const got = this.flatten(v, out, base, 0, w, key, place);
        if (got !== w) throw this.shape(key, got, w, place);
      }
    }
    if (this.pathCol >= 0) {
      const v = obj[this.info.columns[this.pathCol]];
      if (typeof v !== 'string')
        throw new InfluenceError(
          'IMAGE_COLUMN_MISSING',
          `the image path ${show(this.info.columns[this.pathCol])} must be a string (a file path), found ${show(jsonText(v))}`,
          place,
        );
      this.lastPath = v;
    }
    const ix = this.index;
    if (ix) {
      const v = obj[ix.name];
      if (!Object.hasOwn(obj, ix.name)) throw this.keysDiffer(ix.name, place);
      const text = JSON.stringify(v) ?? String(v);
      ix.add(
        typeof v === 'number' ? v : typeof v === 'string' ? parseNumber(v) : NaN,
        text,
        sc.recLine,
        this.info.featureCount,
      );
    }
    const lc = this.labelCol;
    if (lc < 0) {
      labels[li] = -1;
      return;
    }
    const key = this.info.labelColumn;
    if (!Object.hasOwn(obj, key)) throw this.keysDiffer(key, place);
    const v = obj[key];
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < this.limit) {
      labels[li] = v;
    } else if (typeof v === 'number' || typeof v === 'string') {
      labels[li] = this.labelFromText(String(v), place);
    } else {
      throw new InfluenceError(
        'LABEL_INVALID',
        `label must be an integer class id or a class name, found ${show(jsonText(v))}`,
        place,
      );
    }
  }

  private flatten(
    v: unknown,
    out: Float32Array | Float64Array,
    base: number,
    idx: number,
    w: number,
    key: string,
    place: { file: string; line: number },
  ): number {
    eachLeaf(v, (x) => {
      let num: number;
      if (typeof x === 'number') num = x;
      else if (typeof x === 'string') num = parseNumber(x);
      else {
        throw new InfluenceError(
          'FEATURE_NOT_NUMERIC',
          `feature ${show(key)} has non-numeric value ${show(jsonText(x))}`,
          place,
        );
      }
      const f = this.float64 ? num : Math.fround(num);
      if (f - f !== 0) throw this.badValue(key, String(x), place);
      if (idx < w) out[base + idx] = f;
      idx++;
    });
    return idx;
  }

  private keysDiffer(key: string, place: { file: string; line: number }): InfluenceError {
    return new InfluenceError(
      'JSONL_KEYS_DIFFER',
      `this object has no key ${show(key)}, which the first object has (every object needs the label and feature keys)`,
      place,
    );
  }

  private shape(key: string, got: number, want: number, place: { file: string; line: number }): InfluenceError {
    return new InfluenceError(
      'FEATURE_SHAPE',
      `feature ${show(key)} has ${got} value${got === 1 ? '' : 's'} here but ${want} in the first object`,
      place,
    );
  }
}

/**
 * The check of a column taken for a row index: every value an integer, no two alike. The values
 * are kept (8 bytes a row) and sorted once at the end of the pass. A failure means the guess was
 * wrong, and as a feature the column leaves the file one column wider than the model's input.
 */
class IndexCheck {
  private values = new Float64Array(1024);
  private lines = new Int32Array(1024);
  private count = 0;

  constructor(
    readonly col: number,
    readonly name: string,
    private readonly file: string,
  ) {}

  add(v: number, text: string, line: number, featureCount: number, col?: () => number): void {
    if (!Number.isInteger(v)) {
      throw this.notAnIndex(`here it holds ${show(text.trim())}, not an integer`, featureCount, {
        file: this.file,
        line,
        col: col?.(),
      });
    }
    if (this.count === this.values.length) {
      const values = new Float64Array(this.count * 2);
      values.set(this.values);
      const lines = new Int32Array(this.count * 2);
      lines.set(this.lines);
      this.values = values;
      this.lines = lines;
    }
    this.values[this.count] = v;
    this.lines[this.count++] = line;
  }

  /** After the last row: throws on the first repeated value, at the line of its second occurrence. */
  finish(featureCount: number): void {
    const n = this.count;
    const sorted = this.values.slice(0, n).sort();
    let dup: number | null = null;
    for (let i = 1; i < n && dup === null; i++) if (sorted[i] === sorted[i - 1]) dup = sorted[i];
    if (dup === null) return;
    const first = this.values.indexOf(dup);
    const second = this.values.indexOf(dup, first + 1);
    throw this.notAnIndex(`the value ${dup} appears on line ${this.lines[first]} and again here`, featureCount, {
      file: this.file,
      line: this.lines[second],
    });
  }

  private notAnIndex(
    why: string,
    featureCount: number,
    place: { file: string; line: number; col?: number },
  ): InfluenceError {
    return new InfluenceError(
      'FEATURE_COUNT_MISMATCH',
      `the first column ${show(this.name)} was taken for a row index and skipped (the other ${featureCount} columns match the model's input), but ${why}; as a feature it makes ${featureCount + 1} columns, one more than the model takes: choose the features with --features, or skip columns with --ignore-columns`,
      place,
    );
  }
}
