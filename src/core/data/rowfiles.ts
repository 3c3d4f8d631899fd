/**
 * What the extension shows of rows that are files or rows of files: each listed row's file and
 * thumbnail (images, or the image column of a Parquet/Arrow file), and one Parquet/Arrow row's fields.
 */
import { openColumns, type ColumnFile } from './columnar';
import { fileThumbnail, thumbnail } from './images/thumbnail';
import type { RowLocator } from './locator';
import { imageBytes, imageFormatOf } from './images/decode';

export interface RowFileInfo {
  file: string;
  fileRow?: number;
  thumb?: string;
}

/** The image column of a columnar file, if it has one. */
function imageColumn(cf: ColumnFile): string | null {
  return cf.columns.find((c) => c.kind === 'image')?.name ?? cf.columns.find((c) => c.kind === 'binary')?.name ?? null;
}

/** Each row's file (and row in it), with a thumbnail when the row is an image. */
export async function rowFiles(locator: RowLocator, rows: number[], size = 64): Promise<Map<number, RowFileInfo>> {
  const out = new Map<number, RowFileInfo>();
  const wanted = [...new Set(rows)];
  if (locator.kind === 'images') {
    for (const i of wanted) {
      const file = locator.files[locator.file[i]];
      out.set(i, { file, thumb: await fileThumbnail(file, size) });
    }
    return out;
  }
  const byFile = new Map<number, number[]>();
  for (const i of wanted) {
    const f = locator.file[i];
    byFile.set(f, [...(byFile.get(f) ?? []), i]);
  }
  for (const [f, list] of byFile) {
    const file = locator.files[f];
    let cf: ColumnFile | null = null;
    try {
      cf = await openColumns(file);
      const col = imageColumn(cf);
      for (const i of list) {
        const r = locator.fileRow![i];
        let thumb: string | undefined;
        if (col) {
          const [row] = await cf.rowsAt([col], r, r + 1);
          const bytes = imageBytes(row?.[0]);
          if (bytes) thumb = await thumbnail(bytes, `${file} row ${r}`, size).catch(() => undefined);
        }
        out.set(i, { file, fileRow: r, thumb });
      }
    } catch {
      for (const i of list) out.set(i, { file, fileRow: locator.fileRow![i] });
    } finally {
      await cf?.close();
    }
  }
  return out;
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return '(null)';
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  if (typeof v === 'string') return v.length > 200 ? `${v.slice(0, 200)}…` : v;
  const img = imageBytes(v);
  if (img) {
    const path =
      v && typeof v === 'object' && typeof (v as { path?: unknown }).path === 'string'
        ? `, path ${(v as { path: string }).path}`
        : '';
    return `${imageFormatOf(img)!.toUpperCase()} image, ${img.length.toLocaleString('en-US')} bytes${path}`;
  }
  if (v instanceof Uint8Array) return `${v.length.toLocaleString('en-US')} bytes`;
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    const a = Array.from(v as ArrayLike<unknown>);
    const head = a
      .slice(0, 12)
      .map((x) => (typeof x === 'number' ? String(+x.toPrecision(6)) : String(x)))
      .join(', ');
    return `[${head}${a.length > 12 ? ', …' : ''}] (${a.length} values)`;
  }
  try {
    return JSON.stringify(v, (_k, x) =>
      typeof x === 'bigint' ? String(x) : x instanceof Uint8Array ? `${x.length} bytes` : x,
    ).slice(0, 200);
  } catch {
    return String(v);
  }
}

/** A Parquet or Arrow row's fields in words, and its image. */
export async function rowDetail(
  file: string,
  fileRow: number,
  title: string,
): Promise<{
  title: string;
  file: string;
  fileRow: number;
  fields: { name: string; value: string }[];
  image?: string;
}> {
  const cf = await openColumns(file);
  try {
    const names = cf.columns.map((c) => c.name);
    const [row] = await cf.rowsAt(names, fileRow, fileRow + 1);
    const fields = names.map((name, j) => ({ name, value: describe(row?.[j]) }));
    let image: string | undefined;
    for (const v of row ?? []) {
      const b = imageBytes(v);
      if (b) {
        image = await thumbnail(b, `${file} row ${fileRow}`, 160).catch(() => undefined);
        break;
      }
    }
    return { title, file, fileRow, fields, image };
  } finally {
    await cf.close();
  }
}
