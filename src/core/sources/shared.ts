/**
 * What the readers of the non-table sources share: the request and result types, the model's
 * preprocessing, the cache key and file stamps (an unchanged stamp is size, mtime, inode and ctime;
 * when only size and mtime match, the content hash decides), the rows' summary and SourceInfo, the
 * decoding notes, and which reader a source goes to. Apart from index.ts, so the readers (images.ts,
 * columns.ts, testRow.ts, features.ts) import it without an import cycle.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import type { Progress } from '../errors';
import type { RowsCache } from '../cache/store';
import { hashFile, type CacheKeyParts } from '../cache/keys';
import { openColumns } from '../data/columnar';
import { describePipeline, resolvePipeline, type PreprocessConfig, type Pipeline } from '../data/images/preprocess';
import type { RowLocator, StampSha } from '../data/locator';
import {
  columnFiles,
  planColumns,
  sourceKind,
  type ImageListing,
  type SourceInfo,
  type SourceKind,
  type SourceOptions,
} from '../data/source';
import { formatFromPath, type TableSummary } from '../data/table';
import type { Engine, ForwardRows } from '../model/engine';

/** What a run asks of a source beyond the table options: the image column and the preprocessing from settings or flags. */
export interface ImageRequest {
  imageColumn?: string;
  preprocess?: PreprocessConfig;
}

/** Forward rows of a source, with what was read this time. */
export interface SourceRows extends ForwardRows {
  locator: RowLocator;
  kind: SourceKind;
  /** Files (images or shards) read this time, and reused from the cache. */
  read: number;
  reused: number;
  notes: string[];
  /** The image preprocessing, when the rows are images. */
  preprocess: PreprocessSummary | null;
  /** The cache key of these rows, and whether they differ from the cached entry (which is then stored again). */
  key: CacheKeyParts;
  changed: boolean;
}

/** The preprocessing as the JSON and the panel show it. */
export interface PreprocessSummary {
  steps: string[];
  pipeline: Omit<Pipeline, 'from'>;
  from: Pipeline['from'];
}

export interface RunOpts {
  signal?: AbortSignal;
  onProgress?: Progress;
  batchSize?: number;
  cache?: RowsCache | null;
}

export function modelPipeline(
  engine: Engine,
  preprocess: PreprocessConfig | undefined,
): { pipeline: Pipeline; notes: string[] } {
  const info = engine.info;
  const metadata = engine.model.proto.metadataProps.find((m) => m.key === 'influence_lens.preprocess')?.value;
  return resolvePipeline(
    { path: info.path, inputDims: info.inputDims, F: info.F, float64: info.inputType === 'float64', metadata },
    preprocess,
  );
}

export function summarize(p: Pipeline, hf: boolean): PreprocessSummary {
  const { from, ...pipeline } = p;
  return { steps: describePipeline(p, hf), pipeline, from };
}

export function statOrNull(path: string): fs.Stats | null {
  try {
    return fs.statSync(path);
  } catch {
    return null;
  }
}

/** Is a file as it was when read (stamp), deciding by content hash when only size and mtime agree? */
export async function unchanged(path: string, was: StampSha, signal?: AbortSignal): Promise<StampSha | null> {
  const st = statOrNull(path);
  if (!st || st.size !== was.size || st.mtimeMs !== was.mtimeMs) return null;
  const now = { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino };
  if (st.ino === was.ino && st.ctimeMs === was.ctimeMs) return { ...now, sha256: was.sha256 };
  if (!was.sha256) return null;
  const sha = await hashFile(path, signal).catch(() => null);
  return sha === was.sha256 ? { ...now, sha256: sha } : null;
}

export function sourceKey(
  engine: Engine,
  path: string,
  kind: SourceKind,
  table: SourceOptions,
  extra: unknown,
): CacheKeyParts {
  return {
    modelSha256: engine.info.sha256,
    dataPath: path,
    options: {
      source: kind,
      labelColumn: table.labelColumn ?? 'label',
      features: table.features ?? null,
      ignoreColumns: table.ignoreColumns,
      classes: table.classes ?? null,
      numClasses: table.numClasses,
      imageColumn: table.imageColumn ?? null,
      requireLabel: table.requireLabel ?? true,
      extra,
    },
  };
}

/** Summary of a source's rows: the hash covers every row's file hash, row and label. */
export function summaryOf(n: number, locator: RowLocator, labels: Int32Array): TableSummary {
  const h = createHash('sha256');
  const rowBuf = Buffer.alloc(12);
  for (let i = 0; i < n; i++) {
    h.update(locator.stamps[locator.file[i]].sha256 ?? locator.files[locator.file[i]]);
    rowBuf.writeInt32LE(locator.fileRow ? locator.fileRow[i] : 0, 0);
    rowBuf.writeInt32LE(labels[i], 4);
    h.update(rowBuf);
  }
  let size = 0;
  let mtimeMs = 0;
  let ctimeMs = 0;
  for (const s of locator.stamps) {
    size += s.size;
    mtimeMs = Math.max(mtimeMs, s.mtimeMs);
    ctimeMs = Math.max(ctimeMs, s.ctimeMs);
  }
  return { rows: n, sha256: h.digest('hex'), size, mtimeMs, ctimeMs, ino: 0 };
}

/** Notes on what decoding did: images converted between grey and RGB. */
export function conversionNotes(kinds: (string | null)[], p: Pipeline, what: string): string[] {
  let toGrey = 0;
  let toRgb = 0;
  const greyModes = new Set(['L', 'LA', '1', 'I;16']);
  for (const k of kinds) {
    if (!k) continue;
    const grey = greyModes.has(k.split(' ')[1]);
    if (p.channels === 'grey' && !grey) toGrey++;
    if ((p.channels === 'rgb' || p.channels === 'bgr') && grey) toRgb++;
  }
  const notes: string[] = [];
  if (toGrey)
    notes.push(
      `${toGrey.toLocaleString('en-US')} colour image${toGrey === 1 ? '' : 's'} in ${what} ${toGrey === 1 ? 'was' : 'were'} converted to grey for the model's one channel (ITU-R 601-2 luma, as Pillow's convert("L"))`,
    );
  if (toRgb)
    notes.push(
      `${toRgb.toLocaleString('en-US')} grey image${toRgb === 1 ? '' : 's'} in ${what} ${toRgb === 1 ? 'was' : 'were'} converted to RGB for the model's three channels (the grey value in each channel, as Pillow's convert("RGB"))`,
    );
  return notes;
}

/** The stamp of a source not yet read as a whole (a width check, one test row). */
export const NO_STAMP = { size: 0, mtimeMs: 0, ctimeMs: 0, ino: 0 };

export function sourceInfo(
  path: string,
  format: SourceInfo['format'],
  columns: string[],
  labelColumn: string,
  hasLabel: boolean,
  F: number,
  s: Pick<TableSummary, 'size' | 'mtimeMs' | 'ctimeMs' | 'ino'>,
  featureNames: string[] = [],
): SourceInfo {
  return {
    path,
    format,
    columns,
    labelColumn,
    hasLabel,
    featureNames,
    featureCount: F,
    size: s.size,
    mtimeMs: s.mtimeMs,
    ctimeMs: s.ctimeMs,
    ino: s.ino,
  };
}

export function formatOf(kind: SourceKind, path: string): SourceInfo['format'] {
  if (kind === 'imagefolder' || kind === 'image') return kind;
  return formatFromPath(path) ?? (/\.(parquet|pq)$/i.test(path) ? 'parquet' : 'arrow');
}

/** A non-table source's options and kind: images (a folder, one image, a manifest) or columns. */
export async function sourceOf(
  engine: Engine,
  path: string,
  table: SourceOptions,
  request: ImageRequest,
): Promise<{ opts: SourceOptions; kind: ImageListing['kind'] | 'columns' }> {
  const opts: SourceOptions = { ...engine.tableOptions(table), imageColumn: request.imageColumn ?? table.imageColumn };
  const kind = await sourceKind(path, opts);
  if (kind !== 'columns') return { opts, kind: kind as ImageListing['kind'] };
  // A Parquet or Arrow manifest is listed like a text one.
  const first = await openColumns(columnFiles(path)[0]);
  try {
    return { opts, kind: (await planColumns(first, opts)).mode === 'manifest' ? 'manifest' : 'columns' };
  } finally {
    await first.close();
  }
}

export function sameStamp(a: StampSha | null | undefined, b: StampSha | null | undefined): boolean {
  return (
    !!a &&
    !!b &&
    a.size === b.size &&
    a.mtimeMs === b.mtimeMs &&
    a.ctimeMs === b.ctimeMs &&
    a.ino === b.ino &&
    a.sha256 === b.sha256
  );
}
