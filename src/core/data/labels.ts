/**
 * A quick pre-scan of a label column for class names. When a training file's labels are names and
 * no class list is known (no --classes, no model metadata), the engine maps them to class ids in
 * sorted order, as sklearn's LabelEncoder does; the ids must be known before the forward pass (the
 * loss and g depend on them), so the distinct names are collected first.
 *
 * The scan stops at once when the first label is an integer id, and as soon as more names than
 * wanted are seen. It goes line by line with native searches (Buffer.indexOf) and decodes only the
 * label field: a CSV file without quotes or lone CRs splits at the separator, and a JSONL object
 * with the label key first or last is read around that key (other objects are parsed whole). A CSV
 * file with quotes or lone CRs takes the exact record scanner (scan.ts). A file that is not well
 * formed can mislead the line scan (a ragged row), so an outcome that is an error (the wrong count
 * of names, ids among names) is checked by the exact scanner, which skips malformed records: the
 * pass that follows reports them.
 *
 * On 200,000 rows × 128 features (193 MB) the scan takes 0.1–0.35 s for CSV (the table parse
 * 4.1 s) and 0.25–0.65 s for JSONL (2.6 s), on the 2-core development machine (shared, so ranges);
 * with integer labels it stops after the first row (under 25 ms with the header probe).
 */
import { throwIfAborted } from '../errors';
import { parseNumber } from './numbers';
import { ChunkReader, COMMA, CsvScanner, DONE, JsonlScanner, NEED, openFile, rescan, TAB, type Opener } from './scan';
import type { TableFormat } from './table';

export interface LabelNames {
  /** The distinct label texts (trimmed) in order of appearance; at most count + 1 of them. */
  names: string[];
  /** True when the scan stopped because more than count distinct names were seen. */
  more: boolean;
  /** An integer label met among the names (the labels mix ids and names), with its line. */
  integer: { text: string; line: number } | null;
  /** The first name and its line. */
  first: { text: string; line: number };
}

export interface ScanLabelOptions {
  /** The number of names wanted (the model's classes): the scan stops after more than this many. */
  count: number;
  signal?: AbortSignal;
  chunkSize?: number;
  open?: Opener;
}

const LF = 10;
const CR = 13;
const QUOTE = 34;
const SPACE = 32;
const HTAB = 9;
const BACKSLASH = 92;
const LINE_CHUNK = 4 << 20;

const isInteger = (text: string) => Number.isInteger(parseNumber(text));

/** The distinct names as they are met; `take` returns false to stop the scan. */
class NameSet {
  readonly seen = new Set<string>();
  readonly out: LabelNames = { names: [], more: false, integer: null, first: { text: '', line: 0 } };
  /** The first label was an integer: the labels are ids. */
  ids = false;

  constructor(private readonly count: number) {}

  take(text: string, line: number): boolean {
    if (text === '' || this.seen.has(text)) return true;
    if (isInteger(text)) {
      if (this.seen.size === 0) {
        this.ids = true;
        return false;
      }
      this.out.integer ??= { text, line };
      return true;
    }
    if (this.seen.size === 0) this.out.first = { text, line };
    this.seen.add(text);
    this.out.names.push(text);
    if (this.seen.size > this.count) {
      this.out.more = true;
      return false;
    }
    return true;
  }

  result(): LabelNames | null {
    return this.ids || this.seen.size === 0 ? null : this.out;
  }

  /** Whether the names are what the caller can use as they are (else the exact scanner checks them). */
  clean(): boolean {
    return (
      this.ids || this.seen.size === 0 || (!this.out.more && this.out.integer === null && this.seen.size === this.count)
    );
  }
}

/**
 * The class names in a file's label column, or null when its first label is an integer class id
 * (or the file has no rows): then the labels are ids and there is nothing to map.
 */
export async function scanLabelNames(
  path: string,
  format: TableFormat,
  labelColumn: string,
  opts: ScanLabelOptions,
): Promise<LabelNames | null> {
  throwIfAborted(opts.signal);
  const fast = new NameSet(opts.count);
  const reader =
    format === 'jsonl'
      ? jsonlLineReader(labelColumn, fast)
      : csvLineReader(format === 'tsv' ? HTAB : 44, labelColumn, fast);
  if ((await eachLine(path, opts, format !== 'jsonl', reader)) && fast.clean()) return fast.result();
  const exact = new NameSet(opts.count);
  await exactScan(path, format, labelColumn, opts, exact);
  return exact.result();
}

type LineReader = (b: Buffer, s: number, e: number, line: number) => boolean;

const blank = (b: Buffer, s: number, e: number, sep: number) => {
  for (let i = s; i < e; i++) if (b[i] !== SPACE && (b[i] !== HTAB || sep === HTAB)) return false;
  return true;
};

/**
 * Calls `each` on every line [s, e) (without its LF or CRLF) with its 1-based number, until it
 * returns false. Returns false, having stopped, when the file needs the exact scanner: a lone CR
 * (a line end of its own), or for CSV a quote (a quoted field may hold separators and newlines).
 */
async function eachLine(path: string, opts: ScanLabelOptions, csv: boolean, each: LineReader): Promise<boolean> {
  const { src } = await (opts.open ?? openFile)(path);
  try {
    const size = Math.max(opts.chunkSize ?? LINE_CHUNK, 1);
    let carry = Buffer.alloc(0);
    let pos = 0;
    let line = 1;
    let start = true;
    for (;;) {
      throwIfAborted(opts.signal);
      // The unfinished line first, then the next read.
      const buf = Buffer.allocUnsafe(carry.length + size);
      carry.copy(buf, 0);
      const n = await src.read(buf, carry.length, size, pos);
      pos += n;
      const eof = n === 0;
      const b = buf.subarray(0, carry.length + n);
      if (start && !eof && b.length < 3) {
        carry = b;
        continue;
      }
      let s = 0;
      if (start) {
        if (b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) s = 3;
        start = false;
      }
      // Whole lines only: [s, end); the rest waits for the next read.
      const end = eof ? b.length : b.lastIndexOf(LF) + 1;
      if (end > s) {
        if (csv) {
          const q = b.indexOf(QUOTE, s);
          if (q >= 0 && q < end) return false;
        }
        for (let c = b.indexOf(CR, s); c >= 0 && c < end; c = b.indexOf(CR, c + 1))
          if (c + 1 >= b.length || b[c + 1] !== LF) return false;
        while (s < end) {
          let e = b.indexOf(LF, s);
          if (e < 0 || e >= end) e = end;
          const next = e < end ? e + 1 : e;
          const ce = e > s && b[e - 1] === CR ? e - 1 : e;
          if (!each(b, s, ce, line)) return true;
          line++;
          s = next;
        }
      }
      if (eof) return true;
      carry = b.subarray(Math.max(end, s));
    }
  } finally {
    await src.close();
  }
}

/** CSV lines (no quotes): the header gives the label's field, found from the nearer end of each line. */
function csvLineReader(sep: number, labelColumn: string, names: NameSet): LineReader {
  let H = -1;
  let lc = -1;
  return (b, s, e, line) => {
    if (blank(b, s, e, sep)) return true;
    if (H < 0) {
      const header = b
        .toString('utf8', s, e)
        .split(String.fromCharCode(sep))
        .map((h) => h.trim());
      H = header.length;
      lc = header.indexOf(labelColumn);
      return lc >= 0;
    }
    let fs: number;
    let fe: number;
    if (lc <= H - 1 - lc) {
      fs = s;
      for (let k = 0; k < lc; k++) {
        const j = b.indexOf(sep, fs);
        if (j < 0 || j >= e) return true; // too few fields: the pass reports it
        fs = j + 1;
      }
      fe = b.indexOf(sep, fs);
      if (fe < 0 || fe > e) fe = e;
    } else {
      fe = e;
      for (let k = 0; k < H - 1 - lc; k++) {
        const j = fe > s ? b.lastIndexOf(sep, fe - 1) : -1;
        if (j < s) return true;
        fe = j;
      }
      const j = fe > s ? b.lastIndexOf(sep, fe - 1) : -1;
      fs = j < s ? s : j + 1;
    }
    return names.take(b.toString('utf8', fs, fe).trim(), line);
  };
}

/** JSONL lines: the label key read where it is the object's first or last key; other lines parsed whole. */
function jsonlLineReader(labelColumn: string, names: NameSet): LineReader {
  const key = Buffer.from(JSON.stringify(labelColumn));
  const ws = (c: number) => c === SPACE || c === HTAB || c === CR || c === LF;
  /** The end of the JSON scalar at i (a string, a number, true, false, null), or -1. */
  const scalarEnd = (b: Buffer, i: number, e: number): number => {
    if (b[i] === QUOTE) {
      for (let j = i + 1; j < e; j++) {
        if (b[j] === BACKSLASH) j++;
        else if (b[j] === QUOTE) return j + 1;
      }
      return -1;
    }
    let j = i;
    while (j < e && b[j] !== 44 && b[j] !== 125 && !ws(b[j])) j++;
    return j > i ? j : -1;
  };
  /** The label text of the value after the key at k, if the object's structure around it is as required. */
  const valueAt = (b: Buffer, k: number, e: number, last: boolean): string | null => {
    let i = k + key.length;
    while (i < e && ws(b[i])) i++;
    if (b[i] !== 58) return null; // ':'
    i++;
    while (i < e && ws(b[i])) i++;
    const j = scalarEnd(b, i, e);
    if (j < 0) return null;
    let t = j;
    while (t < e && ws(b[t])) t++;
    if (last) {
      // `"key": value }` and the line's end: the key is the top-level object's last.
      if (b[t] !== 125) return null;
      t++;
      while (t < e && ws(b[t])) t++;
      if (t !== e) return null;
    } else if (b[t] !== 44 && b[t] !== 125) {
      return null;
    }
    let v: unknown;
    try {
      v = JSON.parse(b.toString('utf8', i, j));
    } catch {
      return null;
    }
    return labelText(v);
  };
  return (b, s, e, line) => {
    if (blank(b, s, e, -1)) return true;
    let i = s;
    while (i < e && ws(b[i])) i++;
    let text: string | null = null;
    if (b[i] === 123) {
      // `{ "key"`: the top-level object's first key.
      let k = i + 1;
      while (k < e && ws(b[k])) k++;
      if (b.compare(key, 0, key.length, k, Math.min(k + key.length, e)) === 0) text = valueAt(b, k, e, false);
      if (text === null && e - key.length >= s) {
        // The last occurrence, preceded by `,` (a key's quote, not an escaped one).
        const k2 = b.lastIndexOf(key, e - key.length);
        if (k2 > s) {
          let p = k2 - 1;
          while (p > s && ws(b[p])) p--;
          if (b[p] === 44) text = valueAt(b, k2, e, true);
        }
      }
    }
    if (text === null) {
      let v: unknown;
      try {
        v = JSON.parse(b.toString('utf8', s, e))[labelColumn];
      } catch {
        v = undefined;
      }
      text = labelText(v);
    }
    return names.take(text, line);
  };
}

/** The text of a JSONL label value as the reader sees it (numbers as String(v)); '' for anything else. */
function labelText(v: unknown): string {
  return typeof v === 'string' ? v.trim() : typeof v === 'number' ? String(v) : '';
}

/** The exact record scanners of the table reader (quotes, lone CRs, malformed records skipped). */
async function exactScan(
  path: string,
  format: TableFormat,
  labelColumn: string,
  opts: ScanLabelOptions,
  names: NameSet,
): Promise<void> {
  const { src, st } = await (opts.open ?? openFile)(path);
  try {
    const rd = new ChunkReader(src, path, opts.chunkSize ?? 1 << 20, null, { size: st.size, signal: opts.signal });
    if (format === 'jsonl') {
      const sc = new JsonlScanner(path);
      for (;;) {
        let r = sc.scan(rd.buf, rd.end, rd.eof);
        if (r === NEED) r = await rescan(sc, rd);
        if (r === DONE) return;
        let v: unknown;
        try {
          v = sc.object(rd.buf)[labelColumn];
        } catch {
          v = undefined;
        }
        if (!names.take(labelText(v), sc.recLine)) return;
        sc.advance();
      }
    }
    const sc = new CsvScanner(path, format === 'tsv' ? TAB : COMMA);
    let r = sc.scan(rd.buf, rd.end, rd.eof);
    if (r === NEED) r = await rescan(sc, rd);
    if (r === DONE) return;
    const H = sc.n;
    let lc = -1;
    for (let k = 0; k < H && lc < 0; k++) if (sc.text(rd.buf, k).trim() === labelColumn) lc = k;
    if (lc < 0) return;
    sc.advance();
    for (;;) {
      r = sc.scan(rd.buf, rd.end, rd.eof);
      if (r === NEED) r = await rescan(sc, rd);
      if (r === DONE) return;
      if (sc.n === H && !names.take(sc.text(rd.buf, lc).trim(), sc.recLine)) return;
      sc.advance();
    }
  } finally {
    await src.close();
  }
}

/** Code-point order, as numpy sorts strings (np.unique, hence LabelEncoder). */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x - y;
    if (x > 0xffff) i++;
  }
  return a.length - b.length;
}

/** Sorted unique names: the class ids sklearn's LabelEncoder gives them. */
export function sortedClassNames(names: Iterable<string>): string[] {
  return [...new Set(names)].sort(compareCodePoints);
}
