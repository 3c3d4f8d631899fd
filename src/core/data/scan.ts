/**
 * Byte-level record scanning for CSV/TSV (RFC 4180 quoting) and JSONL. The file is read in chunks
 * (ChunkReader) and scanned without decoding, so record byte offsets are exact and UTF-8 sequences
 * split across chunks need no care: only complete fields are ever decoded. A record that straddles
 * a chunk boundary is re-scanned from its first byte once more bytes are in (rescan).
 */
import * as fs from 'node:fs';
import type { Hash } from 'node:crypto';
import { InfluenceError, throwIfAborted, type Progress } from '../errors';

export const NEED = 0;
export const OK = 1;
export const DONE = -1;

const QUOTE = 34;
const LF = 10;
const CR = 13;
const SPACE = 32;
export const TAB = 9;
export const COMMA = 44;

export function fileError(e: unknown, path: string): InfluenceError {
  if (e instanceof InfluenceError) return e;
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new InfluenceError('FILE_NOT_FOUND', `file not found: ${path}`, { file: path });
  }
  const why = e instanceof Error ? e.message : String(e);
  return new InfluenceError('FILE_UNREADABLE', `cannot read ${path}: ${why}`, { file: path });
}

/** What a reader needs to know of a file to tell that it changed: size, times and inode. */
export interface FileStamp {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

/** What the readers read from: a file, or bytes in memory (records re-read by their offsets). */
export interface ByteSource {
  /** Reads up to len bytes at pos into buf[off..]; 0 at the end. */
  read(buf: Buffer, off: number, len: number, pos: number): Promise<number>;
  stat(): Promise<FileStamp>;
  close(): Promise<void>;
}

/** Opens a path for reading. */
export type Opener = (path: string) => Promise<{ src: ByteSource; st: FileStamp }>;

/** Opens a regular file; FILE_NOT_FOUND or FILE_UNREADABLE otherwise. */
export const openFile: Opener = async (path) => {
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
  const src: ByteSource = {
    read: async (buf, off, len, pos) => (await fh.read(buf, off, len, pos)).bytesRead,
    stat: () => fh.stat(),
    close: () => fh.close(),
  };
  return { src, st };
};

/** An opener that reads the given bytes, whatever the path (they stand for that file). */
export function memoryOpener(bytes: Buffer): Opener {
  const st: FileStamp = { size: bytes.length, mtimeMs: 0, ctimeMs: 0, ino: 0 };
  const src: ByteSource = {
    read: async (buf, off, len, pos) =>
      bytes.copy(buf, off, Math.min(pos, bytes.length), Math.min(pos + len, bytes.length)),
    stat: async () => st,
    close: async () => undefined,
  };
  return async () => ({ src, st });
}

export function fileChanged(path: string): InfluenceError {
  return new InfluenceError('FILE_CHANGED', `${path} changed while it was being read; run again`, { file: path });
}

export interface ReadWatch {
  size: number;
  signal?: AbortSignal;
  onProgress?: Progress;
}

export class ChunkReader {
  /** Bytes [0, end) of buf are valid; buf[0] is at absolute file offset `base`. */
  buf: Buffer = Buffer.alloc(0);
  base = 0;
  end = 0;
  eof = false;
  /** Bytes read from the file so far. */
  total = 0;

  constructor(
    private readonly src: ByteSource,
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
      n = await this.src.read(nb, rest, want, this.total);
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

export abstract class Scanner {
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

export class CsvScanner extends Scanner {
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
            throw this.badQuote(
              b,
              i,
              'unexpected text after a closing quote (a quoted field must end at the separator or line end; write a quote inside a quoted field as "")',
            );
          }
        } else if (!eof) {
          return NEED;
        }
      } else {
        const s = i;
        let c: number;
        while (i < end && (c = b[i]) !== sep && c !== LF && c !== CR) {
          if (c === QUOTE) {
            throw this.badQuote(
              b,
              i,
              'quote in the middle of an unquoted field (quote the whole field and double the inner quotes: "a""b")',
            );
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

export class JsonlScanner extends Scanner {
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

/**
 * After a scan returned NEED (the record runs past the buffer): reads on, keeping the record's
 * start, and scans again until the record is whole. Callers scan first themselves, so that the
 * common case costs no await.
 */
export async function rescan(sc: Scanner, rd: ChunkReader): Promise<number> {
  let r: number;
  do {
    const k = sc.pos;
    await rd.more(k);
    sc.pos -= k;
    r = sc.scan(rd.buf, rd.end, rd.eof);
  } while (r === NEED);
  return r;
}
