/** Re-reading a few records of a data file by their byte offsets (for thumbnails), with no temporary file. */
import { promises as fsp } from 'node:fs';
import {
  ChunkReader,
  COMMA,
  CsvScanner,
  DONE,
  fileError,
  JsonlScanner,
  memoryOpener,
  NEED,
  openFile,
  rescan,
  TAB,
  type Scanner,
} from './scan';
import { resolveFormat, TableReader, type TableOptions } from './table';

/**
 * The features of the given rows, read from the file's header bytes [0, offsets[0]) and each
 * row's record [offsets[i], offsets[i+1]), parsed as that file would be.
 */
export async function readRecords(
  path: string,
  table: TableOptions,
  offsets: ArrayLike<number>,
  rows: number[],
): Promise<Map<number, Float32Array | Float64Array>> {
  const out = new Map<number, Float32Array | Float64Array>();
  const wanted = [...new Set(rows)].sort((a, b) => a - b);
  if (wanted.length === 0) return out;
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path, 'r');
  } catch (e) {
    throw fileError(e, path);
  }
  const parts: Buffer[] = [];
  try {
    const read = async (a: number, b: number) => {
      const buf = Buffer.alloc(b - a);
      await fh.read(buf, 0, b - a, a);
      return buf;
    };
    parts.push(await read(0, offsets[0]));
    for (const i of wanted) {
      const rec = await read(offsets[i], offsets[i + 1]);
      parts.push(rec);
      // The last record may end without a line terminator.
      if (rec.length && rec[rec.length - 1] !== 0x0a && rec[rec.length - 1] !== 0x0d) parts.push(Buffer.from('\n'));
    }
  } finally {
    await fh.close();
  }
  const reader = await TableReader.open(path, {
    ...table,
    requireLabel: false,
    open: memoryOpener(Buffer.concat(parts)),
  });
  const F = reader.info.featureCount;
  for await (const b of reader.batches()) {
    for (let r = 0; r < b.count; r++) out.set(wanted[b.start + r], b.features.slice(r * F, (r + 1) * F));
  }
  return out;
}

/**
 * The 0-based data row whose record covers a 1-based line of a CSV/TSV/JSONL file, or null (the
 * header, or blank lines before the first record). Only record boundaries are scanned: no value is
 * parsed, so it works whatever the columns hold.
 */
export async function rowAtLine(path: string, line: number): Promise<{ row: number; line: number } | null> {
  const format = resolveFormat(path, undefined);
  const { src } = await openFile(path);
  try {
    const rd = new ChunkReader(src, path, 1 << 20, null, null);
    const jsonl = format === 'jsonl';
    const sc: Scanner = jsonl ? new JsonlScanner(path) : new CsvScanner(path, format === 'tsv' ? TAB : COMMA);
    const next = async () => {
      const r = sc.scan(rd.buf, rd.end, rd.eof);
      return r === NEED ? rescan(sc, rd) : r;
    };
    if (!jsonl) {
      if ((await next()) === DONE) return null;
      sc.advance();
    }
    let prev: { row: number; line: number } | null = null;
    for (let row = 0; (await next()) !== DONE; row++) {
      if (sc.recLine > line) return prev;
      prev = { row, line: sc.recLine };
      sc.advance();
    }
    return prev;
  } finally {
    await src.close();
  }
}
