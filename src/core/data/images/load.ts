/**
 * One image from its file (or its bytes) to the model's features: read, hash, decode, preprocess.
 * The same code runs in the decoding threads (worker.ts) and, for a few images, in the caller's.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { InfluenceError } from '../../errors';
import { fileError, type FileStamp } from '../scan';
import { decodeImage } from './decode';
import { prepareImage, type Pipeline, type Prepared } from './preprocess';

/** One image to load: a file to read, or bytes (a Parquet or Arrow cell) standing for `name`. */
export interface ImageTask {
  path: string;
  bytes?: Uint8Array;
  /** Where a manifest names this file (for a missing file's message). */
  place?: { file: string; line: number };
  /** From a Hugging Face Parquet image column: EXIF 'auto' applies. */
  hf?: boolean;
}

/** What was learnt about a loaded image. */
export interface ImageFacts extends Prepared {
  /** Hex SHA-256 of the bytes decoded. */
  sha256: string;
  /** The file's stamp when it was read (null for bytes from a table). */
  stamp: FileStamp | null;
  /** Format and Pillow mode, e.g. "png L". */
  kind: string;
}

/** Reads a file with the stamp of the handle it was read through. */
export function readWithStamp(
  path: string,
  place?: { file: string; line: number },
): { bytes: Uint8Array; stamp: FileStamp } {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (place && (code === 'ENOENT' || code === 'ENOTDIR')) {
      throw new InfluenceError(
        'IMAGE_NOT_FOUND',
        `the image ${path} does not exist (paths in a manifest are relative to the manifest's folder)`,
        place,
      );
    }
    throw fileError(e, path);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile())
      throw new InfluenceError('FILE_UNREADABLE', `${path} is not a regular file`, place ?? { file: path });
    const bytes = new Uint8Array(st.size);
    let off = 0;
    while (off < bytes.length) {
      const got = fs.readSync(fd, bytes, off, bytes.length - off, off);
      if (got === 0) break;
      off += got;
    }
    return {
      bytes: off === bytes.length ? bytes : bytes.subarray(0, off),
      stamp: { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino },
    };
  } finally {
    fs.closeSync(fd);
  }
}

/** Loads one image into out[at … at + F). */
export async function loadImage(
  task: ImageTask,
  p: Pipeline,
  out: Float32Array | Float64Array,
  at: number,
): Promise<ImageFacts> {
  let bytes = task.bytes;
  let stamp: FileStamp | null = null;
  if (!bytes) ({ bytes, stamp } = readWithStamp(task.path, task.place));
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const d = await decodeImage(bytes, task.path);
  const prepared = prepareImage(d, p, task.path, task.hf ?? false, out, at);
  return { ...prepared, sha256, stamp, kind: `${d.format} ${d.mode}` };
}
