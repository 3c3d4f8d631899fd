/** WebP (lossy, lossless, with alpha) with libwebp compiled to WebAssembly (@jsquash/webp); the EXIF chunk's orientation. */
import decode, { init } from '@jsquash/webp/decode.js';
import { exifOrientation, fromRgba, type Decoded } from './pixels';
import { loadWasm, ownBuffer } from './wasm';

export function isWebp(b: Uint8Array): boolean {
  return (
    b.length >= 12 &&
    b[0] === 0x52 &&
    b[1] === 0x49 &&
    b[2] === 0x46 &&
    b[3] === 0x46 &&
    b[8] === 0x57 &&
    b[9] === 0x45 &&
    b[10] === 0x42 &&
    b[11] === 0x50
  );
}

/** The RIFF chunks' EXIF orientation and whether the image has alpha (VP8L/ALPH or the VP8X flag). */
function webpInfo(b: Uint8Array): { orientation: number; alpha: boolean } {
  let pos = 12;
  let orientation = 1;
  let alpha = false;
  while (pos + 8 <= b.length) {
    const id = String.fromCharCode(b[pos], b[pos + 1], b[pos + 2], b[pos + 3]);
    const len = b[pos + 4] | (b[pos + 5] << 8) | (b[pos + 6] << 16) | (b[pos + 7] << 24);
    const data = pos + 8;
    if (id === 'VP8X' && data < b.length) alpha = (b[data] & 0x10) !== 0;
    else if (id === 'ALPH') alpha = true;
    else if (id === 'VP8L' && data + 5 <= b.length) alpha = alpha || ((b[data + 4] >> 4) & 1) === 1;
    else if (id === 'EXIF') {
      let tiff = b.subarray(data, Math.min(b.length, data + len));
      // Some writers keep JPEG's "Exif\0\0" prefix.
      if (tiff.length >= 6 && tiff[0] === 0x45 && tiff[1] === 0x78 && tiff[2] === 0x69 && tiff[3] === 0x66)
        tiff = tiff.subarray(6);
      orientation = exifOrientation(tiff);
    }
    pos = data + len + (len & 1);
  }
  return { orientation, alpha };
}

let ready: Promise<void> | null = null;

export async function decodeWebp(b: Uint8Array): Promise<Decoded> {
  ready ??= loadWasm('webp_dec.wasm', '@jsquash/webp/codec/dec/webp_dec.wasm').then((m) => init(m));
  await ready;
  const info = webpInfo(b);
  const img = await decode(ownBuffer(b));
  return {
    ...fromRgba(img.data, img.width, img.height, false),
    format: 'webp',
    mode: info.alpha ? 'RGBA' : 'RGB',
    orientation: info.orientation,
  };
}
