/**
 * Any supported image file's bytes → pixels: the format is sniffed from the content (not the
 * extension): PNG, JPEG, WebP and BMP. Errors name the file: IMAGE_UNSUPPORTED for a format (or a
 * variant) that is not read, IMAGE_CORRUPT for a file its decoder rejects.
 */
import { InfluenceError } from '../../errors';
import { BmpUnsupported, decodeBmp, isBmp } from './bmp';
import { decodeJpeg, isJpeg, jpegInfo, jpegProblem } from './jpeg';
import type { Decoded } from './pixels';
import { decodePng, isPng } from './png';
import { decodeWebp, isWebp } from './webp';

/** What a file that is not one of the four formats appears to be, for the message. */
function otherFormat(b: Uint8Array): string | null {
  const ascii = (o: number, s: string) =>
    b.length >= o + s.length && [...s].every((ch, i) => b[o + i] === ch.charCodeAt(0));
  if (ascii(0, 'GIF8')) return 'GIF';
  if (
    (b[0] === 0x49 && b[1] === 0x49 && b[2] === 42 && b[3] === 0) ||
    (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && b[3] === 42)
  )
    return 'TIFF';
  if (ascii(4, 'ftypavif') || ascii(4, 'ftypavis')) return 'AVIF';
  if (ascii(4, 'ftypheic') || ascii(4, 'ftypheix') || ascii(4, 'ftypmif1')) return 'HEIF';
  if (b[0] === 0x50 && b[1] >= 0x31 && b[1] <= 0x36) return 'PNM (PBM/PGM/PPM)';
  if (b[0] === 0 && b[1] === 0 && b[2] === 1 && b[3] === 0) return 'ICO';
  if (b[0] === 0xff && b[1] === 0x0a) return 'JPEG XL';
  return null;
}

export function imageFormatOf(b: Uint8Array): Decoded['format'] | null {
  if (isPng(b)) return 'png';
  if (isJpeg(b)) return 'jpeg';
  if (isWebp(b)) return 'webp';
  if (isBmp(b)) return 'bmp';
  return null;
}

/** The encoded image in a Parquet/Arrow cell (binary, or a {bytes, path} struct), or null when it holds none. */
export function imageBytes(v: unknown): Uint8Array | null {
  const b =
    v instanceof Uint8Array
      ? v
      : v && typeof v === 'object' && (v as { bytes?: unknown }).bytes instanceof Uint8Array
        ? (v as { bytes: Uint8Array }).bytes
        : null;
  return b && imageFormatOf(b) ? b : null;
}

/** Decodes `bytes` read from `file` (named in errors). */
export async function decodeImage(bytes: Uint8Array, file: string): Promise<Decoded> {
  const unsupported = (why: string) => new InfluenceError('IMAGE_UNSUPPORTED', why, { file });
  const corrupt = (e: unknown) =>
    new InfluenceError(
      'IMAGE_CORRUPT',
      `cannot decode this image: ${((e as Error)?.message ?? String(e)).split('\n')[0]}`,
      { file },
    );
  if (bytes.length === 0) throw new InfluenceError('IMAGE_CORRUPT', 'the image file is empty', { file });
  const format = imageFormatOf(bytes);
  if (format === null) {
    const other = otherFormat(bytes);
    throw unsupported(
      other
        ? `${other} images are not supported; use PNG, JPEG, BMP or WebP`
        : 'not an image in a supported format (PNG, JPEG, BMP or WebP)',
    );
  }
  try {
    switch (format) {
      case 'png':
        return decodePng(bytes);
      case 'jpeg': {
        const info = jpegInfo(bytes);
        const problem = jpegProblem(info);
        if (problem)
          throw info.complete && info.components !== 0
            ? unsupported(problem)
            : new InfluenceError('IMAGE_CORRUPT', problem, { file });
        return await decodeJpeg(bytes, info);
      }
      case 'webp':
        return await decodeWebp(bytes);
      case 'bmp':
        return decodeBmp(bytes);
    }
  } catch (e) {
    if (e instanceof InfluenceError) throw e;
    if (e instanceof BmpUnsupported) throw unsupported(e.message);
    throw corrupt(e);
  }
}
