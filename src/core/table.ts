/**
 * Streaming reader for tabular training data: CSV / TSV (RFC 4180 quoting) and JSONL.
 *
 * The file is never held as one string. It is read in chunks (1 MiB by default) and
 * scanned at the byte level, so record byte offsets are exact (a later `clean` command
 * copies kept records byte for byte) and UTF-8 sequences split across chunks need no
 * special care: only complete fields are ever decoded. A record that straddles a chunk
 * boundary is re-scanned from its first byte once more bytes are in; the read size
 * grows with the pending record, so even huge records cost amortised linear time.
 */

import * as fs from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import * as nodePath from 'node:path';
import { InfluenceError, throwIfAborted, type Progress } from './errors';

export type TableFormat = 'csv' | 'tsv' | 'jsonl';

export interface TableOptions {
  /** Default 'label'. */
  labelColumn?: string;
  /** Default: every other column in file order. */
  features?: string[];
  /** Class names; string labels are mapped through them (index = class id). */
  classes?: string[] | null;
  /** If given, integer labels must be in [0, numClasses). */
  numClasses?: number;
  /** Default true. If false and the label column is absent, labels are -1. */
  requireLabel?: boolean;
  /** Rows per batch, default 4096. */
  batchSize?: number;
  /** Default from the extension: .csv, .tsv/.tab, .jsonl/.ndjson. */
  format?: TableFormat;
  signal?: AbortSignal;
  /** Called as onProgress('read', bytesDone, totalBytes) once per chunk read. */
  onProgress?: Progress;
  /** @internal Bytes per read (default 1 MiB). Tests use tiny values to split fields across reads. */
  chunkSize?: number;
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
  features: Float32Array;
  labels: Int32Array;
  /** 1-based line on which each record starts. */
  lines: Int32Array;
  /**
   * count+1 byte offsets: record r spans [offsets[r], offsets[r+1]), including its line
   * terminator and any blank lines that follow it (blank lines before the first record
   * belong to the header part [0, offsets[0]) of the file).
   */
  offsets: Float64Array;
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

const NEED = 0;
const OK = 1;
const DONE = -1;

const DEFAULT_CHUNK = 1 << 20;
const DEFAULT_BATCH = 4096;
const MAX_INT32 = 2147483647;

const QUOTE = 34;
const LF = 10;
const CR = 13;
const SPACE = 32;
const TAB = 9;

const POW10 = [
  1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
  1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/** Quote a user value for a message, truncating long text. */
function show(text: string, max = 40): string {
  const t = text.length > max ? text.slice(0, max) + '…' : text;
  return JSON.stringify(t);
}

function listNames(names: readonly string[], max = 20): string {
  if (names.length === 0) return '(none)';
  const shown = names.slice(0, max).map((n) => show(n, 60)).join(', ');
  return names.length > max ? `${shown}, … (${names.length - max} more)` : shown;
}

/** The format implied by the file extension, or null. */
export function formatFromPath(path: string): TableFormat | null {
  const ext = nodePath.extname(path).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.tsv' || ext === '.tab') return 'tsv';
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  return null;
}

function resolveFormat(path: string, format: TableFormat | undefined): TableFormat {
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

function fileError(e: unknown, path: string): InfluenceError {
  if (e instanceof InfluenceError) return e;
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new InfluenceError('FILE_NOT_FOUND', `file not found: ${path}`, { file: path });
  }
  const why = e instanceof Error ? e.message : String(e);
  return new InfluenceError('FILE_UNREADABLE', `cannot read ${path}: ${why}`, { file: path });
}

async function openFile(path: string): Promise<{ fh: fs.promises.FileHandle; st: fs.Stats }> {
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(path);
  } catch (e) {
    throw fileError(e, path);
  }
  if (!st.isFile()) {
    throw new InfluenceError(
      'FILE_UNREADABLE',
      st.isDirectory() ? `${path} is a directory, not a data file` : `${path} is not a regular file`,
      { file: path },
    );
  }
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(path, 'r');
  } catch (e) {
    throw fileError(e, path);
  }
  return { fh, st };
}

function fileChanged(path: string): InfluenceError {
  return new InfluenceError('FILE_CHANGED', `${path} changed while it was being read; run again`, { file: path });
}

// ---------------------------------------------------------------------------------------
// Numbers

/**
 * Strict number parse of bytes [s, e): optional spaces/tabs around, optional sign,
 * digits with an optional '.', optional exponent. Returns NaN when the text is not such
 * a number (so 'nan', 'inf', '0x10' and '' all give NaN; callers classify on error).
 * Fast path (<= 15 significant digits, |exp| <= 22) is exact, i.e. equal to Number().
 */
function parseNumBytes(b: Buffer, s: number, e: number): number {
  let c: number;
  while (s < e && ((c = b[s]) === SPACE || c === TAB)) s++;
  while (e > s && ((c = b[e - 1]) === SPACE || c === TAB)) e--;
  if (s === e) return NaN;
  let i = s;
  let neg = false;
  c = b[i];
  if (c === 45) {
    neg = true;
    i++;
  } else if (c === 43) {
    i++;
  }
  let mant = 0;
  let sig = 0;
  let digits = 0;
  let exp10 = 0;
  let d: number;
  while (i < e && (d = b[i] - 48) >= 0 && d <= 9) {
    digits++;
    if (sig > 0 || d !== 0) sig++;
    mant = mant * 10 + d;
    i++;
  }
  if (i < e && b[i] === 46) {
    i++;
    while (i < e && (d = b[i] - 48) >= 0 && d <= 9) {
      digits++;
      if (sig > 0 || d !== 0) sig++;
      mant = mant * 10 + d;
      exp10--;
      i++;
    }
  }
  if (digits === 0) return NaN;
  if (i < e && ((c = b[i]) === 101 || c === 69)) {
    i++;
    let eneg = false;
    if (i < e && ((c = b[i]) === 45 || c === 43)) {
      eneg = c === 45;
      i++;
    }
    let ev = 0;
    let ed = 0;
    while (i < e && (d = b[i] - 48) >= 0 && d <= 9) {
      if (ev < 100000) ev = ev * 10 + d;
      ed++;
      i++;
    }
    if (ed === 0) return NaN;
    exp10 += eneg ? -ev : ev;
  }
  if (i !== e) return NaN;
  if (sig <= 15 && exp10 >= -22 && exp10 <= 22) {
    const v = exp10 < 0 ? mant / POW10[-exp10] : mant * POW10[exp10];
    return neg ? -v : v;
  }
  // Grammar already checked, so Number() cannot accept anything we would reject.
  return Number(b.toString('latin1', s, e));
}

function isDigitCode(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** Same grammar as parseNumBytes, for strings (JSONL values, unescaped quoted fields). */
export function parseNumber(text: string): number {
  let a = 0;
  let e = text.length;
  let c: number;
  while (a < e && ((c = text.charCodeAt(a)) === SPACE || c === TAB)) a++;
  while (e > a && ((c = text.charCodeAt(e - 1)) === SPACE || c === TAB)) e--;
  if (a === e) return NaN;
  let i = a;
  c = text.charCodeAt(i);
  if (c === 43 || c === 45) i++;
  let digits = 0;
  while (i < e && isDigitCode(text.charCodeAt(i))) {
    i++;
    digits++;
  }
  if (i < e && text.charCodeAt(i) === 46) {
    i++;
    while (i < e && isDigitCode(text.charCodeAt(i))) {
      i++;
      digits++;
    }
  }
  if (digits === 0) return NaN;
  if (i < e && ((c = text.charCodeAt(i)) === 101 || c === 69)) {
    i++;
    if (i < e && ((c = text.charCodeAt(i)) === 43 || c === 45)) i++;
    let ed = 0;
    while (i < e && isDigitCode(text.charCodeAt(i))) {
      i++;
      ed++;
    }
    if (ed === 0) return NaN;
  }
  if (i !== e) return NaN;
  return Number(text.slice(a, e));
}

/** Plain non-negative integer label (" 3 ", "3.0", up to 9 digits) from bytes, else -1. */
function parseIntBytes(b: Buffer, s: number, e: number): number {
  let c: number;
  while (s < e && ((c = b[s]) === SPACE || c === TAB)) s++;
  while (e > s && ((c = b[e - 1]) === SPACE || c === TAB)) e--;
  if (s === e || e - s > 30) return -1;
  let v = 0;
  let i = s;
  let d: number;
  while (i < e && (d = b[i] - 48) >= 0 && d <= 9) {
    v = v * 10 + d;
    i++;
  }
  const nd = i - s;
  if (nd === 0 || nd > 9) return -1;
  if (i < e && b[i] === 46) {
    i++;
    while (i < e && b[i] === 48) i++;
  }
  return i === e ? v : -1;
}

// ---------------------------------------------------------------------------------------
// Buffered chunk reader

interface ReadWatch {
  size: number;
  signal?: AbortSignal;
  onProgress?: Progress;
}

class ChunkReader {
  /** Bytes [0, end) of buf are valid; buf[0] is at absolute file offset `base`. */
  buf: Buffer = Buffer.alloc(0);
  base = 0;
  end = 0;
  eof = false;
  /** Bytes read from the file so far. */
  total = 0;

  constructor(
    private readonly fh: fs.promises.FileHandle,
    private readonly path: string,
    private readonly chunk: number,
    private readonly hash: Hash | null,
    private readonly watch: ReadWatch | null,
  ) {}

  /** Drop buf[0, keep) and read at least one more chunk (or reach EOF). */
  async more(keep: number): Promise<void> {
    const w = this.watch;
    if (w) throwIfAborted(w.signal);
    const rest = this.end - keep;
    // Read at least as much as is pending, so a record spanning many chunks is rescanned
    // only O(log n) times.
    const want = Math.max(this.chunk, rest);
    const nb = Buffer.allocUnsafe(rest + want);
    if (rest > 0) this.buf.copy(nb, 0, keep, this.end);
    let n: number;
    try {
      n = (await this.fh.read(nb, rest, want, this.total)).bytesRead;
    } catch (e) {
      throw fileError(e, this.path);
    }
    this.buf = nb;
    this.base += keep;
    this.end = rest + n;
    if (n === 0) {
      this.eof = true;
      return;
    }
    this.total += n;
    if (this.hash) this.hash.update(nb.subarray(rest, rest + n));
    if (w) {
      if (this.total > w.size) throw fileChanged(this.path);
      w.onProgress?.('read', this.total, w.size);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Scanners: find record boundaries in the buffer. scan() returns OK (a record is at
// [recStart, next)), NEED (more bytes needed; nothing consumed) or DONE (EOF).

/**
 * The position after the line terminator at b[i] (LF, CR or CRLF), or -1 when a CR ends the
 * chunk before EOF (the next chunk may start with its LF).
 */
function afterTerminator(b: Buffer, i: number, end: number, eof: boolean): number {
  if (b[i] === LF) return i + 1;
  if (i + 1 < end) return b[i + 1] === LF ? i + 2 : i + 1;
  return eof ? i + 1 : -1;
}

abstract class Scanner {
  /** Index in the buffer of the next unconsumed byte (always at a record boundary). */
  pos = 0;
  /** 1-based line number at `pos`. */
  line = 1;
  recStart = 0;
  recLine = 1;
  next = 0;
  nextLine = 1;
  private bomDone = false;

  constructor(
    readonly file: string,
    /** Byte that is a separator, so it does not count as blank-line whitespace. */
    private readonly sepByte: number,
  ) {}

  advance(): void {
    this.pos = this.next;
    this.line = this.nextLine;
  }

  /** Skip a BOM at the very start and blank lines; returns NEED, DONE or OK. */
  protected skip(b: Buffer, end: number, eof: boolean): number {
    let pos = this.pos;
    if (!this.bomDone) {
      if (end < 3 && !eof) return NEED;
      if (end >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) pos = 3;
      this.bomDone = true;
      this.pos = pos;
    }
    let line = this.line;
    const sep = this.sepByte;
    let res = NEED;
    for (;;) {
      let j = pos;
      let c = 0;
      while (j < end && ((c = b[j]) === SPACE || (c === TAB && sep !== TAB))) j++;
      if (j >= end) {
        if (!eof) break;
        pos = end;
        res = DONE;
        break;
      }
      if (c === LF) {
        pos = j + 1;
      } else if (c === CR) {
        if (j + 1 < end) pos = b[j + 1] === LF ? j + 2 : j + 1;
        else if (!eof) break;
        else pos = j + 1;
      } else {
        res = OK;
        break;
      }
      line++;
    }
    // Commit the blank lines skipped so far (they belong to the previous record).
    this.pos = pos;
    this.line = line;
    return res;
  }

  /** Line and 1-based column (UTF-16 units) of buffer index idx within the current record. */
  place(b: Buffer, idx: number): { line: number; col: number } {
    let line = this.recLine;
    let ls = this.recStart;
    for (let j = this.recStart; j < idx; j++) {
      const c = b[j];
      if (c === LF) {
        line++;
        ls = j + 1;
      } else if (c === CR) {
        if (j + 1 < idx && b[j + 1] === LF) j++;
        line++;
        ls = j + 1;
      }
    }
    return { line, col: b.toString('utf8', ls, idx).length + 1 };
  }

  abstract scan(b: Buffer, end: number, eof: boolean): number;
}

class CsvScanner extends Scanner {
  private cap = 64;
  /** Raw field start (the opening quote for quoted fields). */
  fr = new Int32Array(64);
  /** Content start / end (inside the quotes for quoted fields). */
  fs = new Int32Array(64);
  fe = new Int32Array(64);
  /** 0 unquoted, 1 quoted, 2 quoted and containing doubled quotes. */
  fq = new Uint8Array(64);
  /** Number of fields in the last scanned record. */
  n = 0;

  constructor(
    file: string,
    private readonly sep: number,
  ) {
    super(file, sep);
  }

  private grow(): void {
    const cap = this.cap * 2;
    const fr = new Int32Array(cap);
    fr.set(this.fr);
    const fs2 = new Int32Array(cap);
    fs2.set(this.fs);
    const fe = new Int32Array(cap);
    fe.set(this.fe);
    const fq = new Uint8Array(cap);
    fq.set(this.fq);
    this.fr = fr;
    this.fs = fs2;
    this.fe = fe;
    this.fq = fq;
    this.cap = cap;
  }

  private badQuote(b: Buffer, idx: number, what: string): InfluenceError {
    const { line, col } = this.place(b, idx);
    return new InfluenceError('CSV_BAD_QUOTE', what, { file: this.file, line, col });
  }

  scan(b: Buffer, end: number, eof: boolean): number {
    const s0 = this.skip(b, end, eof);
    if (s0 !== OK) return s0;
    const pos = this.pos;
    this.recStart = pos;
    this.recLine = this.line;
    const sep = this.sep;
    let i = pos;
    let n = 0;
    let ln = this.line;
    for (;;) {
      if (n === this.cap) this.grow();
      if (i < end && b[i] === QUOTE) {
        const open = i;
        let j = i + 1;
        let dq = false;
        for (;;) {
          if (j >= end) {
            if (!eof) return NEED;
            const { line } = this.place(b, open);
            throw new InfluenceError(
              'CSV_UNTERMINATED_QUOTE',
              `quoted field starting on line ${line} is never closed (end of file inside quotes)`,
              { file: this.file, line, col: this.place(b, open).col },
            );
          }
          const c = b[j];
          if (c === QUOTE) {
            if (j + 1 >= end) {
              if (!eof) return NEED;
              break;
            }
            if (b[j + 1] === QUOTE) {
              dq = true;
              j += 2;
              continue;
            }
            break;
          }
          if (c === LF) {
            ln++;
          } else if (c === CR) {
            if (j + 1 >= end) {
              if (!eof) return NEED;
            } else if (b[j + 1] === LF) {
              j++;
            }
            ln++;
          }
          j++;
        }
        // b[j] is the closing quote.
        this.fr[n] = open;
        this.fs[n] = open + 1;
        this.fe[n] = j;
        this.fq[n] = dq ? 2 : 1;
        n++;
        i = j + 1;
        if (i < end) {
          const c = b[i];
          if (c !== sep && c !== LF && c !== CR) {
            throw this.badQuote(b, i, 'unexpected text after a closing quote (a quoted field must end at the separator or line end; write a quote inside a quoted field as "")');
          }
        } else if (!eof) {
          return NEED;
        }
      } else {
        const s = i;
        let c: number;
        while (i < end && (c = b[i]) !== sep && c !== LF && c !== CR) {
          if (c === QUOTE) {
            throw this.badQuote(b, i, 'quote in the middle of an unquoted field (quote the whole field and double the inner quotes: "a""b")');
          }
          i++;
        }
        if (i >= end && !eof) return NEED;
        this.fr[n] = s;
        this.fs[n] = s;
        this.fe[n] = i;
        this.fq[n] = 0;
        n++;
      }
      if (i >= end) {
        // EOF without a final newline.
        this.next = end;
        this.nextLine = ln;
        break;
      }
      const c = b[i];
      if (c === sep) {
        i++;
        continue;
      }
      const next = afterTerminator(b, i, end, eof);
      if (next < 0) return NEED;
      this.next = next;
      this.nextLine = ln + 1;
      break;
    }
    this.n = n;
    return OK;
  }

  /** Decoded text of field k (quotes removed, doubled quotes unescaped; not trimmed). */
  text(b: Buffer, k: number): string {
    const t = b.toString('utf8', this.fs[k], this.fe[k]);
    return this.fq[k] === 2 ? t.replace(/""/g, '"') : t;
  }
}

class JsonlScanner extends Scanner {
  contentEnd = 0;

  constructor(file: string) {
    super(file, -1);
  }

  scan(b: Buffer, end: number, eof: boolean): number {
    const s0 = this.skip(b, end, eof);
    if (s0 !== OK) return s0;
    const pos = this.pos;
    let j = pos;
    let c: number;
    while (j < end && (c = b[j]) !== LF && c !== CR) j++;
    if (j >= end) {
      if (!eof) return NEED;
      this.contentEnd = end;
      this.next = end;
      this.nextLine = this.line;
    } else {
      this.contentEnd = j;
      const next = afterTerminator(b, j, end, eof);
      if (next < 0) return NEED;
      this.next = next;
      this.nextLine = this.line + 1;
    }
    this.recStart = pos;
    this.recLine = this.line;
    return OK;
  }

  /** The record's object; JSONL_PARSE / JSONL_NOT_OBJECT otherwise. */
  object(b: Buffer): Record<string, unknown> {
    let v: unknown;
    try {
      v = JSON.parse(b.toString('utf8', this.recStart, this.contentEnd));
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new InfluenceError('JSONL_PARSE', `invalid JSON: ${why}`, { file: this.file, line: this.recLine });
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      const kind = v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`;
      throw new InfluenceError('JSONL_NOT_OBJECT', `each line must be a JSON object, found ${kind}`, {
        file: this.file,
        line: this.recLine,
      });
    }
    return v as Record<string, unknown>;
  }
}

// ---------------------------------------------------------------------------------------
// Header / first record

interface Probe {
  st: fs.Stats;
  columns: string[];
  /** JSONL only: the first object. */
  first: Record<string, unknown> | null;
}

/**
 * After a scan returned NEED (the record runs past the buffer): reads on, keeping the record's
 * start, and scans again until the record is whole. Callers scan first themselves, so that the
 * common case costs no await.
 */
async function rescan(sc: Scanner, rd: ChunkReader): Promise<number> {
  let r: number;
  do {
    const k = sc.pos;
    await rd.more(k);
    sc.pos -= k;
    r = sc.scan(rd.buf, rd.end, rd.eof);
  } while (r === NEED);
  return r;
}

async function probeFile(path: string, format: TableFormat, chunkSize: number): Promise<Probe> {
  const { fh, st } = await openFile(path);
  try {
    const rd = new ChunkReader(fh, path, chunkSize, null, null);
    const sc = format === 'jsonl' ? new JsonlScanner(path) : new CsvScanner(path, format === 'tsv' ? TAB : 44);
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
    await fh.close();
  }
}

/** Column names only (for a UI column picker). */
export async function readHeader(path: string, format?: TableFormat): Promise<string[]> {
  const f = resolveFormat(path, format);
  return (await probeFile(path, f, DEFAULT_CHUNK)).columns;
}

function positiveInt(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new InfluenceError('BAD_OPTION', `${name} must be a positive integer, got ${String(v)}`);
  }
  return v;
}

/** Number of leaves of a (nested) JSON value: arrays flatten, anything else counts 1. */
function widthOf(v: unknown): number {
  if (!Array.isArray(v)) return 1;
  let n = 0;
  for (const x of v) n += widthOf(x);
  return n;
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
  private started = false;
  private result: TableSummary | null = null;

  private constructor(
    info: TableInfo,
    labelCol: number,
    featCols: number[],
    widths: number[],
    opts: TableOptions,
    batchSize: number,
    chunkSize: number,
  ) {
    this.info = info;
    this.labelCol = labelCol;
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
        throw new InfluenceError(
          'BAD_OPTION',
          `the label column ${show(labelColumn)} cannot also be a feature`,
        );
      }
      const dup = opts.features.find((f, i) => opts.features!.indexOf(f) !== i);
      if (dup !== undefined) throw new InfluenceError('BAD_OPTION', `feature column ${show(dup)} is listed twice`);
    }
    if (opts.classes) {
      if (opts.classes.length === 0) throw new InfluenceError('BAD_OPTION', 'classes is empty');
      const names = opts.classes.map((c) => c.trim());
      const dup = names.find((c, i) => names.indexOf(c) !== i);
      if (dup !== undefined) throw new InfluenceError('BAD_OPTION', `class ${show(dup)} is listed twice`);
    }
    throwIfAborted(opts.signal);
    const format = resolveFormat(path, opts.format);
    const probe = await probeFile(path, format, chunkSize);
    const { columns } = probe;

    const labelCol = columns.indexOf(labelColumn);
    const requireLabel = opts.requireLabel ?? true;
    if (labelCol < 0 && requireLabel) {
      throw new InfluenceError(
        'LABEL_COLUMN_MISSING',
        `label column ${show(labelColumn)} not found; available columns: ${listNames(columns, 50)}`,
        { file: path },
      );
    }
    let featureNames: string[];
    if (opts.features !== undefined) {
      const missing = opts.features.filter((f) => !columns.includes(f));
      if (missing.length > 0) {
        throw new InfluenceError(
          'FEATURE_COLUMN_MISSING',
          `feature column${missing.length > 1 ? 's' : ''} ${missing.map((m) => show(m)).join(', ')} not found; available columns: ${listNames(columns, 50)}`,
          { file: path },
        );
      }
      featureNames = [...opts.features];
    } else {
      featureNames = columns.filter((_, i) => i !== labelCol);
    }
    const featCols = featureNames.map((f) => columns.indexOf(f));
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
    return new TableReader(info, labelCol, featCols, widths, opts, batchSize, chunkSize);
  }

  /** Valid after batches() has finished. */
  summary(): TableSummary {
    if (!this.result) throw new Error('TableReader.summary() is only available after batches() has finished');
    return this.result;
  }

  private changed(st: fs.Stats): boolean {
    return st.size !== this.info.size || st.mtimeMs !== this.info.mtimeMs || st.ctimeMs !== this.info.ctimeMs;
  }

  /** Streams all records; may be called once. */
  async *batches(): AsyncGenerator<Batch> {
    if (this.started) throw new Error('TableReader.batches() may be called only once');
    this.started = true;
    const info = this.info;
    const path = info.path;
    throwIfAborted(this.signal);
    const { fh } = await openFile(path);
    try {
      if (this.changed(await fh.stat())) throw fileChanged(path);
      const hash = createHash('sha256');
      const rd = new ChunkReader(fh, path, this.chunkSize, hash, {
        size: info.size,
        signal: this.signal,
        onProgress: this.onProgress,
      });
      this.onProgress?.('read', 0, info.size);
      const jsonl = info.format === 'jsonl';
      const sc: Scanner = jsonl ? new JsonlScanner(path) : new CsvScanner(path, info.format === 'tsv' ? TAB : 44);
      let r: number;
      if (!jsonl) {
        r = sc.scan(rd.buf, rd.end, rd.eof);
        if (r === NEED) r = await rescan(sc, rd);
        if (r === DONE || (sc as CsvScanner).n !== info.columns.length) throw fileChanged(path);
        sc.advance();
      }
      const F = info.featureCount;
      const B = this.batchSize;
      let features = new Float32Array(B * F);
      let labels = new Int32Array(B);
      let lines = new Int32Array(B);
      let offsets = new Float64Array(B + 1);
      let count = 0;
      let start = 0;
      for (;;) {
        r = sc.scan(rd.buf, rd.end, rd.eof);
        if (r === NEED) r = await rescan(sc, rd);
        if (r === DONE) break;
        const recAbs = rd.base + sc.recStart;
        if (count === B) {
          offsets[B] = recAbs;
          yield { start, count, features, labels, lines, offsets };
          throwIfAborted(this.signal);
          start += count;
          count = 0;
          features = new Float32Array(B * F);
          labels = new Int32Array(B);
          lines = new Int32Array(B);
          offsets = new Float64Array(B + 1);
        }
        offsets[count] = recAbs;
        lines[count] = sc.recLine;
        if (jsonl) this.jsonlRow(sc as JsonlScanner, rd.buf, features, count * F, labels, count);
        else this.csvRow(sc as CsvScanner, rd.buf, features, count * F, labels, count);
        count++;
        sc.advance();
      }
      const endAbs = rd.base + sc.pos;
      const st = await fh.stat();
      if (this.changed(st) || rd.total !== info.size || endAbs !== info.size) throw fileChanged(path);
      this.result = { rows: start + count, sha256: hash.digest('hex'), size: info.size, mtimeMs: info.mtimeMs, ctimeMs: info.ctimeMs, ino: info.ino };
      throwIfAborted(this.signal);
      if (count > 0) {
        offsets[count] = endAbs;
        yield {
          start,
          count,
          features: count === B ? features : features.slice(0, count * F),
          labels: count === B ? labels : labels.slice(0, count),
          lines: count === B ? lines : lines.slice(0, count),
          offsets: count === B ? offsets : offsets.slice(0, count + 1),
        };
      }
    } catch (e) {
      // A parse error in a file that is being rewritten is better reported as the change.
      if (e instanceof InfluenceError && e.code !== 'FILE_CHANGED') {
        let st: fs.Stats | null = null;
        try {
          st = await fh.stat();
        } catch {
          st = null;
        }
        if (st === null || this.changed(st)) throw fileChanged(path);
      }
      throw e;
    } finally {
      await fh.close();
    }
  }

  // -- CSV / TSV rows --------------------------------------------------------------------

  private csvRow(sc: CsvScanner, b: Buffer, out: Float32Array, o: number, labels: Int32Array, li: number): void {
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
      const v = Math.fround(fq[c] === 2 ? parseNumber(sc.text(b, c)) : parseNumBytes(b, fs0[c], fe[c]));
      if (v - v !== 0) {
        const { line, col } = sc.place(b, sc.fr[c]);
        throw this.badValue(this.info.featureNames[k], sc.text(b, c), { file: sc.file, line, col });
      }
      out[o + k] = v;
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
        `feature ${show(column)} value ${show(t)} overflows float32 (max about 3.4e38)`,
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
      const range =
        this.limit <= MAX_INT32 ? `0..${this.limit - 1}` : `0..${MAX_INT32}`;
      throw new InfluenceError('LABEL_OUT_OF_RANGE', `label ${show(text)} is out of range: valid class ids are ${range}`, place);
    }
    return id === 0 ? 0 : id; // normalise -0
  }

  // -- JSONL rows ------------------------------------------------------------------------

  private jsonlRow(sc: JsonlScanner, b: Buffer, out: Float32Array, o: number, labels: Int32Array, li: number): void {
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
        const f = Math.fround(v);
        if (f - f !== 0) throw this.badValue(key, String(v), place);
        out[base] = f;
      } else {
        const got = this.flatten(v, out, base, 0, w, key, place);
        if (got !== w) throw this.shape(key, got, w, place);
      }
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
        `label must be an integer class id or a class name, found ${show(JSON.stringify(v) ?? String(v))}`,
        place,
      );
    }
  }

  private flatten(
    v: unknown,
    out: Float32Array,
    base: number,
    idx: number,
    w: number,
    key: string,
    place: { file: string; line: number },
  ): number {
    if (Array.isArray(v)) {
      for (const x of v) idx = this.flatten(x, out, base, idx, w, key, place);
      return idx;
    }
    let num: number;
    if (typeof v === 'number') num = v;
    else if (typeof v === 'string') num = parseNumber(v);
    else {
      throw new InfluenceError(
        'FEATURE_NOT_NUMERIC',
        `feature ${show(key)} has non-numeric value ${show(JSON.stringify(v) ?? String(v))}`,
        place,
      );
    }
    const f = Math.fround(num);
    if (f - f !== 0) throw this.badValue(key, String(v), place);
    if (idx < w) out[base + idx] = f;
    return idx + 1;
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

/** Convenience: reads every batch and concatenates them. */
export async function readAll(
  path: string,
  opts?: TableOptions,
): Promise<{
  info: TableInfo;
  features: Float32Array;
  labels: Int32Array;
  lines: Int32Array;
  offsets: Float64Array;
  summary: TableSummary;
}> {
  const reader = await TableReader.open(path, opts);
  const parts: Batch[] = [];
  let rows = 0;
  for await (const b of reader.batches()) {
    parts.push(b);
    rows += b.count;
  }
  const F = reader.info.featureCount;
  const features = new Float32Array(rows * F);
  const labels = new Int32Array(rows);
  const lines = new Int32Array(rows);
  const offsets = new Float64Array(rows + 1);
  const summary = reader.summary();
  if (parts.length === 0) offsets[0] = summary.size;
  for (const b of parts) {
    features.set(b.features, b.start * F);
    labels.set(b.labels, b.start);
    lines.set(b.lines, b.start);
    offsets.set(b.offsets, b.start);
  }
  return { info: reader.info, features, labels, lines, offsets, summary };
}

/** @internal exported for tests. */
export const _internal = { parseNumBytes, parseIntBytes };
