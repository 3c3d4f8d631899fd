/** The command line's image and Parquet/Arrow options, and where a row is for the JSON. */
import { readFileSync } from 'node:fs';
import { isAbsolute, relative } from 'node:path';
import { InfluenceError, parsePreprocess, type ImageRequest, type PreprocessConfig, type RowLocator } from '../core';
import { str, type Flags } from './args';

export const IMAGE_USAGE = `Images, manifests, Parquet and Arrow (TRAIN/TEST may be an image folder, a manifest, .parquet/.arrow/.feather, a folder of those, or an image):
  --image-column NAME   a manifest's path column or a Parquet/Arrow image column (default: path, image, file, filepath)
  --preprocess FILE     preprocessing as JSON ({"resize": 256, "centerCrop": 224, "mean": [...], "std": [...], ...})
  --resize N|HxW|model  resize the shorter side to N, or to HxW (bilinear, as Pillow); default: none
  --center-crop N|HxW|model   then cut the centre
  --scale X             multiply the 0–255 levels by X (default 1/255, as ToTensor)
  --mean a,b,c --std a,b,c    normalize per channel, in the model's channel order
  --channels rgb|bgr|grey     --layout nchw|nhwc   (default: from the model input)
  --exif apply|ignore|auto    EXIF orientation (default auto: applied for Hugging Face Parquet images only)
  The model's metadata influence_lens.preprocess and a preprocess.json beside the model come first, field by field.
`;

/** ImageRequest from the flags: --preprocess FILE first, the single flags over it. */
export function imageRequest(flags: Flags): ImageRequest {
  let config: PreprocessConfig = {};
  const file = str(flags, 'preprocess');
  if (file !== undefined) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new InfluenceError('PREPROCESS_INVALID', `--preprocess: cannot read it as JSON: ${(e as Error).message}`, {
        file,
      });
    }
    config = parsePreprocess(raw, '--preprocess', file);
  }
  const single: Record<string, unknown> = {};
  const map: [string, string][] = [
    ['resize', 'resize'],
    ['center-crop', 'centerCrop'],
    ['scale', 'scale'],
    ['mean', 'mean'],
    ['std', 'std'],
    ['channels', 'channels'],
    ['layout', 'layout'],
    ['exif', 'exif'],
  ];
  for (const [flag, field] of map) {
    const v = str(flags, flag);
    if (v !== undefined) single[field] = v;
  }
  Object.assign(config, parsePreprocess(single, 'the command line'));
  const imageColumn = str(flags, 'image-column');
  return {
    ...(imageColumn !== undefined ? { imageColumn } : {}),
    ...(Object.keys(config).length ? { preprocess: config } : {}),
  };
}

/** Where row i is, for the JSON: its file (and row in a Parquet/Arrow file) when it has one; `line` only for rows of a text file. */
export function rowWhere(
  line: number,
  locator: RowLocator | undefined,
  i: number,
): { line?: number; file?: string; fileRow?: number } {
  if (!locator) return { line };
  const out: { line?: number; file?: string; fileRow?: number } = {};
  if (locator.manifest) out.line = line;
  out.file = shown(locator.files[locator.file[i]]);
  if (locator.fileRow) out.fileRow = locator.fileRow[i];
  return out;
}

/** A file as the output shows it: relative to the working folder when it lies inside it. */
export function shown(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel === '' || rel.startsWith('..') || isAbsolute(rel) ? file : rel;
}
