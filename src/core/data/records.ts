/** Re-reading a few records of a data file by their byte offsets (for thumbnails), with no temporary file. */
import { promises as fsp } from 'node:fs';
import { fileError, memoryOpener } from './scan';
import { TableReader, type TableOptions } from './table';

/**
 * The features of the given rows, read from the file's header bytes [0, offsets[0]) and each
 * row's record [offsets[i], offsets[i+1]), parsed as that file would be.
 */
export async function readRecords(path: string, table: TableOptions, offsets: ArrayLike<number>, rows: number[]): Promise<Map<number, Float32Array | Float64Array>> {
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
  const reader = await TableReader.open(path, { ...table, requireLabel: false, open: memoryOpener(Buffer.concat(parts)) });
  const F = reader.info.featureCount;
  for await (const b of reader.batches()) {
    for (let r = 0; r < b.count; r++) out.set(wanted[b.start + r], b.features.slice(r * F, (r + 1) * F));
  }
  return out;
}
