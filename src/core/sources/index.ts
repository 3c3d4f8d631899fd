/**
 * Forward rows of the sources other than text tables (data/source.ts): image folders, single
 * images, manifests, Parquet and Arrow files. Each source is listed first (cheap); then, through the
 * cache, only the files whose stamp changed since the cached run are read again: one image
 * (images.ts), or one shard (columns.ts). This folder's entry: what the rest of core imports, with a
 * test row (testRow.ts), the deep path's features (features.ts) and the label picker's columns.
 */
import { InfluenceError } from '../errors';
import { sourceKind, type SourceOptions } from '../data/source';
import type { Engine } from '../model/engine';
import { readColumnRows } from './columns';
import { readImageRows } from './images';
import { sourceOf, type ImageRequest, type RunOpts, type SourceRows } from './shared';

export { sourceColumns } from './columns';
export { sourceFeatures } from './features';
export type { ImageRequest, PreprocessSummary, SourceRows } from './shared';
export { forwardSourceRow, type SourceRow } from './testRow';

/** Whether a path is a text table (read by TableReader as before) rather than another source. */
export async function isTable(path: string, table: SourceOptions): Promise<boolean> {
  try {
    return (await sourceKind(path, table)) === 'table';
  } catch (e) {
    // A missing file is the table reader's error to report, as before.
    if (e instanceof InfluenceError && (e.code === 'FILE_NOT_FOUND' || e.code === 'FILE_UNREADABLE')) return true;
    throw e;
  }
}

/**
 * The forward rows of a non-table source, through the cache: files unchanged since the cached run
 * keep their rows; the others are read again.
 */
export async function readSourceRows(
  engine: Engine,
  path: string,
  table: SourceOptions,
  request: ImageRequest,
  run: RunOpts,
): Promise<SourceRows> {
  const { opts, kind } = await sourceOf(engine, path, table, request);
  if (kind === 'columns') return readColumnRows(engine, path, opts, request, run);
  return readImageRows(engine, path, kind, opts, request, run);
}
