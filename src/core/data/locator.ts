/**
 * Where each row of a non-text source is: a file (an image) or a row of a file (a Parquet or Arrow
 * shard). A text table's rows are located by their lines and byte offsets alone; a manifest's rows
 * have both (its lines, and their image files). Kept beside the forward rows and in the cache, with
 * each file's stamp and content hash when read, so that a later run re-reads only changed files.
 */
import type { FileStamp } from './scan';

export interface StampSha extends FileStamp {
  /** Hex SHA-256 of the content read, when known. */
  sha256: string | null;
}

export interface RowLocator {
  /** Rows are image files, or rows of columnar shards. */
  kind: 'images' | 'shards';
  /** Absolute paths. */
  files: string[];
  /** Per file, its stamp and hash when read. */
  stamps: StampSha[];
  /** Per file, what it was when decoded ("png L", "jpeg RGB"), for the notes; null for shards. */
  kinds: string[] | null;
  /** Row → index into files. */
  file: Int32Array;
  /** Row → row within its file (shards), or null (one image per row). */
  fileRow: Int32Array | null;
  /** The manifest whose lines the rows are (lines and offsets refer to it), or null. */
  manifest: string | null;
}

/** The header part of a locator (everything but the per-row arrays), as the cache stores it. */
export type LocatorHeader = Omit<RowLocator, 'file' | 'fileRow'> & { fileRow: boolean };

export function locatorHeader(l: RowLocator): LocatorHeader {
  return {
    kind: l.kind,
    files: l.files,
    stamps: l.stamps,
    kinds: l.kinds,
    manifest: l.manifest,
    fileRow: l.fileRow !== null,
  };
}

/** A row's place for messages and JSON: its file, and its row in that file for shards. */
export function rowPlace(l: RowLocator, i: number): { file: string; fileRow?: number } {
  const file = l.files[l.file[i]];
  return l.fileRow ? { file, fileRow: l.fileRow[i] } : { file };
}
