/** Exporting a data file without some of its rows, byte for byte, to a new file (never an input). */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { InfluenceError, throwIfAborted } from '../errors';

/** Refuses an output path that would overwrite one of the inputs. */
export async function checkOutPath(out: string, inputs: string[]): Promise<void> {
  const outAbs = resolve(out);
  let outReal: string | null = null;
  try {
    outReal = await fsp.realpath(outAbs);
  } catch {
    /* does not exist yet: fine */
  }
  for (const input of inputs) {
    const inReal = await fsp.realpath(resolve(input)).catch(() => resolve(input));
    if (outAbs === resolve(input) || outReal === inReal) {
      throw new InfluenceError(
        'BAD_OPTION',
        `--out ${out} is an input file; clean never overwrites its inputs: choose another path`,
        { file: out },
      );
    }
  }
}

/**
 * Writes the header and every kept record's exact bytes (offsets[i]..offsets[i+1]) to `out`,
 * through a temporary file renamed into place, so `out` is never half-written.
 */
export async function writeWithout(
  input: string,
  offsets: Float64Array,
  removed: number[],
  out: string,
  expect: { size: number; mtimeMs: number },
  signal?: AbortSignal,
): Promise<number> {
  const st = await fsp.stat(input);
  if (st.size !== expect.size || st.mtimeMs !== expect.mtimeMs) {
    throw new InfluenceError('FILE_CHANGED', `${input} changed since it was read; run again`, { file: input });
  }
  const n = offsets.length - 1;
  const drop = new Set(removed);
  // Contiguous byte ranges to copy: the header, then runs of kept rows.
  const ranges: [number, number][] = [[0, offsets[0]]];
  for (let i = 0; i < n; i++) {
    if (drop.has(i)) continue;
    const last = ranges[ranges.length - 1];
    if (last[1] === offsets[i]) last[1] = offsets[i + 1];
    else ranges.push([offsets[i], offsets[i + 1]]);
  }
  const tmp = join(dirname(resolve(out)), `.${basename(out)}.${randomBytes(6).toString('hex')}.tmp`);
  const src = await fsp.open(input, 'r');
  let dst: fsp.FileHandle | null = null;
  try {
    dst = await fsp.open(tmp, 'wx');
    const buf = Buffer.allocUnsafe(1 << 20);
    for (const [a, b] of ranges) {
      for (let pos = a; pos < b;) {
        throwIfAborted(signal);
        const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, b - pos), pos);
        if (bytesRead === 0)
          throw new InfluenceError('FILE_CHANGED', `${input} changed while it was being copied; run again`, {
            file: input,
          });
        await dst.write(buf, 0, bytesRead);
        pos += bytesRead;
      }
    }
    await dst.sync();
    await dst.close();
    dst = null;
    await fsp.rename(tmp, out);
  } catch (e) {
    await dst?.close();
    await fsp.rm(tmp, { force: true });
    throw e;
  } finally {
    await src.close();
  }
  return n - drop.size;
}

/**
 * Writes a new manifest of an image source without some rows (never touching the images): a CSV,
 * TSV or JSONL (by `out`'s extension) with a `path` column, relative to `out`'s folder, and `label`.
 * Through a temporary file renamed into place.
 */
export async function writeManifestWithout(
  files: string[],
  fileOf: Int32Array,
  labels: Int32Array,
  removed: number[],
  out: string,
  signal?: AbortSignal,
): Promise<number> {
  const { extname, relative, sep } = await import('node:path');
  const ext = extname(out).toLowerCase();
  const format = ext === '.jsonl' || ext === '.ndjson' ? 'jsonl' : ext === '.tsv' || ext === '.tab' ? 'tsv' : 'csv';
  const base = dirname(resolve(out));
  const drop = new Set(removed);
  const quote = (p: string) => (/[",\n\r]/.test(p) ? `"${p.replace(/"/g, '""')}"` : p);
  const lines: string[] = [format === 'jsonl' ? '' : format === 'tsv' ? 'path\tlabel' : 'path,label'];
  let kept = 0;
  for (let i = 0; i < fileOf.length; i++) {
    if (drop.has(i)) continue;
    throwIfAborted(signal);
    const p = relative(base, files[fileOf[i]]).split(sep).join('/');
    if (format === 'jsonl') lines.push(JSON.stringify({ path: p, label: labels[i] }));
    else if (format === 'tsv') {
      if (/[\t\n\r]/.test(p))
        throw new InfluenceError(
          'BAD_OPTION',
          `the path ${p} holds a tab or newline: write the manifest as CSV or JSONL`,
          { file: out },
        );
      lines.push(`${p}\t${labels[i]}`);
    } else lines.push(`${quote(p)},${labels[i]}`);
    kept++;
  }
  if (format === 'jsonl') lines.shift();
  const tmp = join(base, `.${basename(out)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await fsp.writeFile(tmp, lines.join('\n') + '\n', { flag: 'wx' });
    await fsp.rename(tmp, out);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  return kept;
}
