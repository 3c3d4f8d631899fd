/**
 * JPEG with mozjpeg compiled to WebAssembly (@jsquash/jpeg): the libjpeg-turbo decode path that
 * Pillow uses (islow IDCT, fancy upsampling), baseline and progressive. Markers are read first: the
 * component count (grey or colour; CMYK is refused), the EXIF orientation, and whether the file
 * ends with its EOI marker (a truncated file is an error, as in Pillow, rather than a grey fill).
 */
import decode, { init } from '@jsquash/jpeg/decode.js';
import { exifOrientation, fromRgba, type Decoded } from './pixels';
import { loadWasm, ownBuffer } from './wasm';

export function isJpeg(b: Uint8Array): boolean {
  return b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
}

export interface JpegInfo {
  components: number;
  progressive: boolean;
  orientation: number;
  /** The file ends with an EOI marker (FFD9), allowing trailing padding. */
  complete: boolean;
}

/** Reads the markers up to the first scan. */
export function jpegInfo(b: Uint8Array): JpegInfo {
  let pos = 2;
  let components = 0;
  let progressive = false;
  let orientation = 1;
  while (pos + 4 <= b.length) {
    if (b[pos] !== 0xff) break;
    const marker = b[pos + 1];
    if (marker === 0xff) {
      pos++;
      continue;
    }
    const len = (b[pos + 2] << 8) | b[pos + 3];
    const seg = pos + 4;
    if (marker === 0xda) break; // start of scan
    if (
      marker >= 0xc0 &&
      marker <= 0xcf &&
      marker !== 0xc4 &&
      marker !== 0xc8 &&
      marker !== 0xcc &&
      seg + 6 <= b.length
    ) {
      components = b[seg + 5];
      progressive = marker === 0xc2 || marker === 0xc6 || marker === 0xca || marker === 0xce;
    } else if (
      marker === 0xe1 &&
      len >= 8 &&
      b[seg] === 0x45 &&
      b[seg + 1] === 0x78 &&
      b[seg + 2] === 0x69 &&
      b[seg + 3] === 0x66 &&
      b[seg + 4] === 0 &&
      b[seg + 5] === 0
    ) {
      orientation = exifOrientation(b.subarray(seg + 6, Math.min(b.length, pos + 2 + len)));
    }
    pos += 2 + len;
  }
  let end = b.length;
  while (end > 2 && b[end - 1] === 0) end--; // zero padding after EOI
  const complete = end >= 2 && b[end - 2] === 0xff && b[end - 1] === 0xd9;
  return { components, progressive, orientation, complete };
}

let ready: Promise<void> | null = null;

function start(): Promise<void> {
  ready ??= loadWasm('mozjpeg_dec.wasm', '@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm').then((m) => init(m));
  return ready;
}

/** Why a JPEG cannot be decoded, or null. */
export function jpegProblem(info: JpegInfo): string | null {
  if (info.components === 0) return 'no frame header (SOF) before the image data: the file is not a readable JPEG';
  if (info.components === 4) return 'a CMYK JPEG (4 components) is not supported: convert it to RGB';
  if (info.components !== 1 && info.components !== 3)
    return `a JPEG with ${info.components} components is not supported`;
  if (!info.complete) return 'the JPEG data is truncated (no end-of-image marker)';
  return null;
}

/** Decodes a JPEG whose markers `info` were read (and passed jpegProblem). */
export async function decodeJpeg(b: Uint8Array, info: JpegInfo): Promise<Decoded> {
  await start();
  const img = await decode(ownBuffer(b), { preserveOrientation: false });
  const grey = info.components === 1;
  return {
    ...fromRgba(img.data, img.width, img.height, grey),
    format: 'jpeg',
    mode: grey ? 'L' : 'RGB',
    orientation: info.orientation,
  };
}
