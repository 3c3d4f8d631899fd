/**
 * What a data path is, and its rows before any decoding. A CSV, TSV or JSONL file of numbers is a
 * table (table.ts; this module does not touch it). Everything else is a source listed here:
 *
 * - an image folder (a directory of class folders, torchvision's ImageFolder);
 * - one image file (a test image that sits in no data file: unlabelled);
 * - a manifest: a CSV / TSV / JSONL / Parquet / Arrow table with a path column (`path`, `image`,
 *   `file`, `filepath`, or the one named), paths relative to the manifest; labels as in any table;
 * - Parquet or Arrow files, or a directory of them (shards, in name order): numeric columns and
 *   lists of numbers (flattened) are features, or an image column (a Hugging Face {bytes, path}
 *   struct, or binary) holds encoded images.
 *
 * Rows are located by (file, row) beside their lines and byte offsets (RowLocator).
 */
import * as fs from 'node:fs';
import { dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { InfluenceError } from '../errors';
import { columnarFormat, openColumns, type ColumnFile, type ColumnInfo } from './columnar';
import { compareCodePoints, isImagePath, listImageFolder } from './images/folder';
import { imageBytes } from './images/decode';
import { LabelMap } from './columnLabels';
import { fileError } from './scan';
import { formatFromPath, readHeader, TableReader, type TableFormat, type TableInfo, type TableOptions } from './table';
import { listNames, show } from './words';

export type SourceKind = 'table' | 'imagefolder' | 'image' | 'manifest' | 'columns';

/** A data source's format: a table's, or one of the other sources'. */
export type SourceFormat = TableFormat | 'imagefolder' | 'image' | 'parquet' | 'arrow';

/** TableInfo for any source (the rows' `table`). */
export interface SourceInfo extends Omit<TableInfo, 'format'> {
  format: SourceFormat;
}

/** The path column names a manifest is recognised by, in order of preference. */
export const PATH_COLUMNS = ['path', 'image', 'file', 'filepath'];

/** Options of the non-table sources, beside the table's. */
export interface SourceOptions extends TableOptions {
  /** A manifest's path column, or a Parquet/Arrow image column. */
  imageColumn?: string;
}

export function isImageFile(path: string): boolean {
  return isImagePath(path);
}

function statOf(path: string): fs.Stats {
  try {
    return fs.statSync(path);
  } catch (e) {
    throw fileError(e, path);
  }
}

/** The columnar files of a directory of shards, in name order (empty if it holds none). */
export function shardsOf(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => !f.startsWith('.') && columnarFormat(f) !== null)
    .sort(compareCodePoints)
    .map((f) => join(dir, f));
}

/** The path column of a manifest's columns, or null: the one asked for (which must exist), else a known name. */
export function pathColumnOf(columns: string[], opts: SourceOptions, file: string): string | null {
  if (opts.imageColumn !== undefined) {
    if (!columns.includes(opts.imageColumn))
      throw new InfluenceError(
        'IMAGE_COLUMN_MISSING',
        `image column ${show(opts.imageColumn)} not found; available columns: ${listNames(columns, 50)}`,
        { file },
      );
    return opts.imageColumn;
  }
  if (opts.features !== undefined) return null;
  for (const name of PATH_COLUMNS) {
    const hit = columns.find((c) => c === name) ?? columns.find((c) => c.toLowerCase() === name);
    if (hit !== undefined && hit !== (opts.labelColumn ?? 'label')) return hit;
  }
  return null;
}

/** The kind of source at `path` (reads at most a header). */
export async function sourceKind(path: string, opts: SourceOptions = {}): Promise<SourceKind> {
  const st = statOf(path);
  if (st.isDirectory()) return shardsOf(path).length > 0 ? 'columns' : 'imagefolder';
  if (columnarFormat(path) !== null) return 'columns';
  if (formatFromPath(path) !== null) {
    if (opts.imageColumn === undefined && opts.features !== undefined) return 'table';
    const columns = await readHeader(path);
    // The image column named (a setting may name it for every file) makes a manifest of a file that has
    // it; a file without it is a manifest by the usual names (and then the missing column is an error).
    if (opts.imageColumn !== undefined && columns.includes(opts.imageColumn)) return 'manifest';
    return pathColumnOf(columns, { ...opts, imageColumn: undefined }, path) !== null ? 'manifest' : 'table';
  }
  if (isImagePath(path) || ['.gif', '.tif', '.tiff'].includes(extname(path).toLowerCase())) return 'image';
  return 'table';
}

// ---------------------------------------------------------------------------------------
// Image listings

/** The rows of an image source: one image file each (files may repeat in a manifest). */
export interface ImageListing {
  kind: 'imagefolder' | 'image' | 'manifest';
  path: string;
  /** Distinct image files, absolute. */
  files: string[];
  n: number;
  /** Row → index into files. */
  file: Int32Array;
  labels: Int32Array;
  labelled: boolean;
  /** A manifest's lines and byte offsets (n + 1), else zeros. */
  lines: Int32Array;
  offsets: Float64Array;
  /** The text file the rows are lines of, or null. */
  manifest: string | null;
  /** Class names the source defines (an image folder's folders), else null. */
  classes: string[] | null;
  /** The columns of a manifest. */
  columns: string[];
  labelColumn: string;
  notes: string[];
}

function resolveIn(base: string, p: string): string {
  return isAbsolute(p) ? p : resolve(base, p);
}

function fromPaths(
  kind: ImageListing['kind'],
  path: string,
  paths: string[],
  rest: Omit<ImageListing, 'kind' | 'path' | 'files' | 'n' | 'file'>,
): ImageListing {
  const index = new Map<string, number>();
  const files: string[] = [];
  const file = new Int32Array(paths.length);
  for (let i = 0; i < paths.length; i++) {
    let k = index.get(paths[i]);
    if (k === undefined) {
      k = files.length;
      index.set(paths[i], k);
      files.push(paths[i]);
    }
    file[i] = k;
  }
  return { kind, path, files, n: paths.length, file, ...rest };
}

export async function listImages(
  path: string,
  kind: 'imagefolder' | 'image' | 'manifest',
  opts: SourceOptions,
): Promise<ImageListing> {
  const labelColumn = opts.labelColumn ?? 'label';
  if (kind === 'image') {
    return fromPaths('image', path, [resolve(path)], {
      labels: Int32Array.of(-1),
      labelled: false,
      lines: new Int32Array(1),
      offsets: new Float64Array(2),
      manifest: null,
      classes: null,
      columns: [],
      labelColumn,
      notes: [],
    });
  }
  if (kind === 'imagefolder') {
    const f = listImageFolder(path, { classes: opts.classes ?? null, numClasses: opts.numClasses });
    const n = f.files.length;
    return fromPaths(
      'imagefolder',
      path,
      f.files.map((r) => join(resolve(path), r)),
      {
        labels: f.labels,
        labelled: true,
        lines: new Int32Array(n),
        offsets: new Float64Array(n + 1),
        manifest: null,
        classes: f.fromFolders ? f.classes : null,
        columns: [],
        labelColumn,
        notes: f.notes,
      },
    );
  }
  if (columnarFormat(path) !== null) return columnarManifest(path, opts);
  const columns = await readHeader(path);
  const pathColumn = pathColumnOf(columns, opts, path)!;
  const reader = await TableReader.open(path, {
    ...opts,
    pathColumn,
    features: undefined,
    requireLabel: opts.requireLabel,
  });
  const base = dirname(resolve(path));
  const paths: string[] = [];
  const labels: number[] = [];
  const lines: number[] = [];
  const offsets: number[] = [];
  let end = -1;
  for await (const b of reader.batches()) {
    for (let r = 0; r < b.count; r++) {
      const p = (b.paths![r] ?? '').trim();
      if (p === '')
        throw new InfluenceError('IMAGE_NOT_FOUND', `the path column ${show(pathColumn)} is empty in this row`, {
          file: path,
          line: b.lines[r],
        });
      paths.push(resolveIn(base, p));
      labels.push(b.labels[r]);
      lines.push(b.lines[r]);
      offsets.push(b.offsets[r]);
    }
    end = b.offsets[b.count];
  }
  offsets.push(end >= 0 ? end : reader.summary().size);
  return fromPaths('manifest', path, paths, {
    labels: Int32Array.from(labels),
    labelled: reader.info.hasLabel,
    lines: Int32Array.from(lines),
    offsets: Float64Array.from(offsets),
    manifest: path,
    classes: null,
    columns,
    labelColumn,
    notes: [`reading images from the column ${show(pathColumn)} of ${path} (paths relative to its folder)`],
  });
}

/** A Parquet or Arrow manifest: a string path column and the labels, read whole (they are small). */
async function columnarManifest(path: string, opts: SourceOptions): Promise<ImageListing> {
  const cf = await openColumns(path);
  try {
    const names = cf.columns.map((c) => c.name);
    const pathColumn = pathColumnOf(names, opts, path)!;
    const labelColumn = opts.labelColumn ?? 'label';
    const hasLabel = names.includes(labelColumn);
    if (!hasLabel && (opts.requireLabel ?? true)) throw labelMissing(labelColumn, names, path);
    const map = new LabelMap(path, labelColumn, opts.classes ?? null, opts.numClasses);
    const base = dirname(resolve(path));
    const paths: string[] = [];
    const labels: number[] = [];
    for await (const rows of cf.batches(hasLabel ? [pathColumn, labelColumn] : [pathColumn])) {
      for (const r of rows) {
        const p = r[0];
        if (typeof p !== 'string' || p.trim() === '')
          throw new InfluenceError(
            'IMAGE_NOT_FOUND',
            `row ${paths.length}: the path column ${show(pathColumn)} holds no path`,
            { file: path },
          );
        paths.push(resolveIn(base, p.trim()));
        labels.push(hasLabel ? map.id(r[1], labels.length) : -1);
      }
    }
    const n = paths.length;
    return fromPaths('manifest', path, paths, {
      labels: Int32Array.from(labels),
      labelled: hasLabel,
      lines: new Int32Array(n),
      offsets: new Float64Array(n + 1),
      manifest: null,
      classes: null,
      columns: names,
      labelColumn,
      notes: [`reading images from the column ${show(pathColumn)} of ${path} (paths relative to its folder)`],
    });
  } finally {
    await cf.close();
  }
}

function labelMissing(labelColumn: string, columns: string[], file: string): InfluenceError {
  return new InfluenceError(
    'LABEL_COLUMN_MISSING',
    `label column ${show(labelColumn)} not found; available columns: ${listNames(columns, 50)}; name the label column with --label-column`,
    { file },
  );
}

// ---------------------------------------------------------------------------------------
// Columnar plans

/** How a columnar file's rows become features: numbers and lists, or encoded images. */
export type ColumnPlan =
  | {
      mode: 'numbers';
      columns: string[];
      widths: number[];
      featureCount: number;
      label: string | null;
      skipped: ColumnInfo[];
    }
  | { mode: 'images'; column: string; struct: boolean; hf: boolean; label: string | null }
  | { mode: 'manifest'; column: string; label: string | null };

const kindWords: Record<string, string> = {
  number: 'a number',
  list: 'a list of numbers',
  image: 'an image struct',
  binary: 'binary',
  string: 'text',
  other: 'not readable as features',
};

function describe(c: ColumnInfo): string {
  return `${show(c.name)} (${c.type}: ${kindWords[c.kind]})`;
}

/** Decides how a columnar file's columns are read (the first rows settle list widths and binary columns). */
export async function planColumns(cf: ColumnFile, opts: SourceOptions): Promise<ColumnPlan> {
  const file = cf.path;
  const names = cf.columns.map((c) => c.name);
  const labelColumn = opts.labelColumn ?? 'label';
  const label = names.includes(labelColumn) ? labelColumn : null;
  if (!label && (opts.requireLabel ?? true)) throw labelMissing(labelColumn, names, file);
  const byName = new Map(cf.columns.map((c) => [c.name, c]));
  // Columns the user (or the data rules) skip: never features, nor the image column found by itself.
  const ignored = new Set(opts.ignoreColumns ?? []);
  const missing = [...ignored].filter((c) => !byName.has(c));
  if (missing.length)
    throw new InfluenceError(
      'FEATURE_COLUMN_MISSING',
      `column${missing.length > 1 ? 's' : ''} to ignore ${missing.map((m) => show(m)).join(', ')} not found; available columns: ${listNames(names, 50)}`,
      { file },
    );
  if (label && ignored.has(label))
    throw new InfluenceError('BAD_OPTION', `the label column ${show(label)} cannot also be ignored`);
  const both = opts.features?.find((f) => ignored.has(f));
  if (both !== undefined) throw new InfluenceError('BAD_OPTION', `column ${show(both)} is both a feature and ignored`);
  const usable = (c: ColumnInfo) => c.name !== label && !ignored.has(c.name);
  const firstRow = async (cols: string[]): Promise<unknown[] | null> => {
    for await (const rows of cf.batches(cols)) if (rows.length) return rows[0];
    return null;
  };
  if (opts.imageColumn !== undefined) {
    const c = byName.get(opts.imageColumn);
    if (!c)
      throw new InfluenceError(
        'IMAGE_COLUMN_MISSING',
        `image column ${show(opts.imageColumn)} not found; available columns: ${listNames(names, 50)}`,
        { file },
      );
    if (c.kind === 'string') return { mode: 'manifest', column: c.name, label };
    if (c.kind === 'image' || c.kind === 'binary')
      return {
        mode: 'images',
        column: c.name,
        struct: c.kind === 'image',
        hf: !!cf.hf?.images.includes(c.name),
        label,
      };
    throw new InfluenceError(
      'NO_USABLE_COLUMN',
      `the image column ${describe(c)} holds neither encoded images nor file paths`,
      { file },
    );
  }
  if (opts.features === undefined) {
    const img = cf.columns.find((c) => c.kind === 'image' && usable(c));
    if (img) return { mode: 'images', column: img.name, struct: true, hf: !!cf.hf?.images.includes(img.name), label };
    for (const c of cf.columns) {
      if (c.kind !== 'binary' || !usable(c)) continue;
      const r = await firstRow([c.name]);
      if (r && imageBytes(r[0]) !== null)
        return { mode: 'images', column: c.name, struct: false, hf: !!cf.hf?.images.includes(c.name), label };
    }
    const pathCol = pathColumnOf(
      cf.columns.filter((c) => c.kind === 'string' && usable(c)).map((c) => c.name),
      { ...opts, imageColumn: undefined },
      file,
    );
    const numeric = cf.columns.filter((c) => (c.kind === 'number' || c.kind === 'list') && usable(c));
    if (pathCol && numeric.length === 0) return { mode: 'manifest', column: pathCol, label };
  }
  const chosen =
    opts.features !== undefined
      ? opts.features.map((f) => {
          const c = byName.get(f);
          if (!c)
            throw new InfluenceError(
              'FEATURE_COLUMN_MISSING',
              `feature column ${show(f)} not found; available columns: ${listNames(names, 50)}`,
              { file },
            );
          if (c.kind !== 'number' && c.kind !== 'list')
            throw new InfluenceError('FEATURE_NOT_NUMERIC', `feature column ${describe(c)} is not numeric`, { file });
          return c;
        })
      : cf.columns.filter((c) => (c.kind === 'number' || c.kind === 'list') && usable(c));
  const skipped = cf.columns.filter((c) => usable(c) && !chosen.includes(c));
  if (chosen.length === 0) {
    const others = cf.columns.filter((c) => c.name !== label);
    throw new InfluenceError(
      'NO_USABLE_COLUMN',
      `no usable column: features must be numbers, lists of numbers, or an image column (a {bytes, path} struct or binary image bytes); ${others.length ? `this file has ${others.map(describe).join(', ')}` : 'this file has no column besides the label'}`,
      { file },
    );
  }
  const widths: number[] = [];
  const lists = chosen.filter((c) => c.kind === 'list');
  const first = lists.length ? await firstRow(lists.map((c) => c.name)) : null;
  for (const c of chosen) {
    if (c.kind === 'number') widths.push(1);
    else {
      const v = first?.[lists.indexOf(c)];
      widths.push(Array.isArray(v) || ArrayBuffer.isView(v) ? (v as ArrayLike<number>).length : 0);
    }
  }
  return {
    mode: 'numbers',
    columns: chosen.map((c) => c.name),
    widths,
    featureCount: widths.reduce((a, b) => a + b, 0),
    label,
    skipped,
  };
}

/** Fills features[at…] from a row of the plan's columns (label first when there is one); throws naming the file and row. */
export function numbersOfRow(
  plan: Extract<ColumnPlan, { mode: 'numbers' }>,
  row: unknown[],
  offset: number,
  out: Float32Array | Float64Array,
  at: number,
  file: string,
  rowIndex: number,
): void {
  let o = at;
  for (let j = 0; j < plan.columns.length; j++) {
    const v = row[j + offset];
    const w = plan.widths[j];
    const bad = (what: string) =>
      new InfluenceError(
        what.includes('finite')
          ? 'FEATURE_NOT_FINITE'
          : what.includes('values')
            ? 'FEATURE_SHAPE'
            : 'FEATURE_NOT_NUMERIC',
        `row ${rowIndex} (0-based): feature ${show(plan.columns[j])} ${what}`,
        { file },
      );
    if (w === 1 && !(Array.isArray(v) || ArrayBuffer.isView(v))) {
      const x =
        typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : typeof v === 'boolean' ? Number(v) : NaN;
      if (v === null || v === undefined) throw bad('is empty (null)');
      if (!Number.isFinite(x)) throw bad(typeof v === 'number' ? `has non-finite value ${v}` : `is not a number`);
      out[o++] = x;
      continue;
    }
    if (!(Array.isArray(v) || ArrayBuffer.isView(v)))
      throw bad(v === null || v === undefined ? 'is empty (null)' : 'is not a list of numbers');
    const a = v as ArrayLike<unknown>;
    if (a.length !== w) throw bad(`has ${a.length} values here but ${w} in the first row`);
    for (let k = 0; k < w; k++) {
      const e = a[k];
      const x = typeof e === 'number' ? e : typeof e === 'bigint' ? Number(e) : NaN;
      if (!Number.isFinite(x))
        throw bad(e === null ? 'has an empty (null) value' : `has non-finite value ${String(e)}`);
      out[o++] = x;
    }
  }
  if (out instanceof Float32Array) {
    for (let k = at; k < o; k++)
      if (!Number.isFinite(out[k]))
        throw new InfluenceError(
          'FEATURE_NOT_FINITE',
          `row ${rowIndex} (0-based): a feature overflows float32 (max about 3.4e38)`,
          { file },
        );
  }
}

/** The columnar files of a path: the file itself, or a directory's shards. */
export function columnFiles(path: string): string[] {
  const st = statOf(path);
  if (!st.isDirectory()) return [path];
  const shards = shardsOf(path);
  if (!shards.length) throw new InfluenceError('NO_ROWS', `${path} holds no Parquet or Arrow files`, { file: path });
  return shards;
}
