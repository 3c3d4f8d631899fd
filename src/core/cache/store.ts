/**
 * RowsCache: a disk cache of per-row forward results (ForwardRows), so that a second run on the
 * same training file and model skips the table parse and the ONNX forward pass, and of the arrays
 * derived from them (the curvature). Format in format.ts, keys in keys.ts.
 *
 * Entries are written to `<name>.<pid>.<random>.tmp` in the same directory, fsynced and renamed
 * over the final name, so a reader sees either the old complete entry or the new one. Temp files
 * older than an hour (left by killed runs) are deleted on construction and on every store.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { CancelledError, throwIfAborted } from '../errors';
import type { ForwardRows } from '../model/engine';
import { locatorHeader } from '../data/locator';
import {
  arraysOf,
  align8,
  bodyPieces,
  bytesOf,
  check,
  Corrupt,
  counts,
  derivedLayout,
  DERIVED_MAGIC,
  END_MAGIC,
  ENTRY_RE,
  errCode,
  FORMAT_VERSION,
  isInt,
  layout,
  MAGIC,
  NAME_RE,
  preamble,
  PREAMBLE,
  readHeader,
  readVerified,
  TEMP_MAX_AGE_MS,
  TEMP_RE,
  TRAILER,
  validateHeader,
  writeFull,
  writePieces,
  type EntryHeader,
} from './format';
import { hashFile, keyOf, type CacheKeyParts } from './keys';

/** What a RowsCache with `memory` keeps: one rows entry and the arrays derived from it. */
interface Memo {
  hex: string;
  rows: ForwardRows;
  derived: Map<string, Float64Array[]>;
}

// ---------------------------------------------------------------------------------------

/** One of the arrays an entry stores, from the rows (the locator's from the locator). */
function arrayOf(rows: ForwardRows, name: string): Float32Array | Float64Array | Int32Array {
  if (name === 'file') return rows.locator!.file;
  if (name === 'fileRow') return rows.locator!.fileRow!;
  return rows[name as 'h' | 'g' | 'z' | 'loss' | 'labels' | 'lines' | 'offsets'];
}

export class RowsCache {
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
    if (st && st.size === s.size && st.mtimeMs === s.mtimeMs && st.ctimeMs === s.ctimeMs && st.ino === s.ino)
      return { ...m.rows, table: { ...m.rows.table, path: dataPath } };
    this.memo = null;
    return null;
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
    return this.loadEntry(key, true, signal);
  }

  /**
   * The cached rows of a source with a row locator (images, Parquet, Arrow), whatever its files'
   * stamps now: the caller compares each file's stamp and hash (locator.stamps) and re-reads only
   * what changed. Null when there is no intact entry. Never throws except CancelledError.
   */
  async loadSource(key: CacheKeyParts, signal?: AbortSignal): Promise<ForwardRows | null> {
    return this.loadEntry(key, false, signal);
  }

  private async loadEntry(key: CacheKeyParts, checkData: boolean, signal?: AbortSignal): Promise<ForwardRows | null> {
    throwIfAborted(signal);
    let k: ReturnType<typeof keyOf>;
    let file: string;
    let fh: fs.promises.FileHandle;
    try {
      k = keyOf(key); // throws only for options that are not JSON data (cycles)
      const kept = checkData
        ? await this.recall(k.hex, key.dataPath)
        : this.memo?.hex === k.hex && this.memo.rows.locator
          ? this.memo.rows
          : null;
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
      check(checkData === !h.locator, 'entry kind');

      // Is the data file the one the entry was built from? Size and mtime must match. If its inode
      // and ctime (which no write can leave unchanged, and no user can set) match too, the bytes are
      // those that were hashed, as git trusts its index; otherwise the content hash decides.
      // (A source's entry is checked file by file by its caller.)
      stale = checkData;
      const dst = checkData ? await fs.promises.stat(key.dataPath) : null;
      if (dst) check(dst.size === h.summary.size && dst.mtimeMs === h.summary.mtimeMs, 'data file changed');
      if (dst && (dst.ctimeMs !== h.summary.ctimeMs || dst.ino !== h.summary.ino)) {
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
        ...(h.locator
          ? {
              locator: { ...h.locator, file: new Int32Array(n), fileRow: h.locator.fileRow ? new Int32Array(n) : null },
            }
          : {}),
        table: { ...h.table, path: key.dataPath },
        summary: {
          rows: n,
          sha256: h.summary.sha256,
          size: h.summary.size,
          mtimeMs: h.summary.mtimeMs,
          ctimeMs: h.summary.ctimeMs,
          ino: h.summary.ino,
        },
      };
      // Padding is read into one scratch buffer; the checksum covers it.
      const pieces = bodyPieces(
        h.arrays.map((a) => ({ offset: a.offset, view: bytesOf(arrayOf(rows, a.name)) })),
        jsonEnd,
        Buffer.alloc(8),
      );
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
      const locator = rows.locator ? locatorHeader(rows.locator) : undefined;
      for (const a of arraysOf(locator)) if (arrayOf(rows, a.name)?.length !== c[a.per]) return false;
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
        summary: {
          rows: n,
          sha256: rows.summary.sha256,
          size: rows.summary.size,
          mtimeMs: rows.summary.mtimeMs,
          ctimeMs: rows.summary.ctimeMs,
          ino: rows.summary.ino,
        },
        ...(locator ? { locator } : {}),
        arrays: [],
        body: 0,
        created: Date.now(),
      };
      // The layout depends on the JSON length, which depends on the layout's numbers:
      // iterate until the length is stable (twice at most in practice).
      let jsonBuf = Buffer.alloc(0);
      for (let i = 0; i < 8; i++) {
        const { arrays, body } = layout(align8(PREAMBLE + jsonBuf.length), n, C, D, locator);
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

      const arrays = header.arrays.map((a) => ({ offset: a.offset, view: bytesOf(arrayOf(rows, a.name)) }));
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
  async loadDerived(
    key: CacheKeyParts,
    name: string,
    dataSha256: string,
    signal?: AbortSignal,
  ): Promise<Float64Array[] | null> {
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
      check(
        h !== null && typeof h === 'object' && h.key === json && h.name === name && h.dataSha256 === dataSha256,
        'key',
      );
      check(Array.isArray(h.lengths) && h.lengths.every((l) => isInt(l)), 'lengths');
      const { arrays, body } = derivedLayout(
        PREAMBLE + J,
        h.lengths.map((l) => new Float64Array(l)),
      );
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
      const jsonBuf = Buffer.from(
        JSON.stringify({ key: k.json, name, dataSha256, lengths: data.map((a) => a.length) }),
        'utf8',
      );
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
  private async writeAtomic(
    base: string,
    magic: Buffer,
    jsonBuf: Buffer,
    arrays: { offset: number; view: Buffer }[],
    body: number,
  ): Promise<boolean> {
    let fh: fs.promises.FileHandle | null = null;
    let tmp: string | null = null;
    try {
      const pieces = [
        { pos: 0, buf: preamble(magic, jsonBuf) },
        { pos: PREAMBLE, buf: jsonBuf },
        ...bodyPieces(arrays, PREAMBLE + jsonBuf.length, Buffer.alloc(8)),
      ];
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
