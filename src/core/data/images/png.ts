/**
 * PNG with pngjs, made to give Pillow's `convert('L')` / `convert('RGB')` values: every bit depth,
 * colour type and interlacing; 16-bit samples keep their high byte; a tRNS colour key is dropped
 * before decoding (pngjs would zero the keyed pixels, Pillow keeps their colour); palette images
 * expand through their palette.
 */
import { PNG } from 'pngjs';
import { exifOrientation, fromRgba, type Decoded } from './pixels';

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export function isPng(b: Uint8Array): boolean {
  return b.length >= 8 && SIGNATURE.every((v, i) => b[i] === v);
}

interface Chunks {
  depth: number;
  colorType: number;
  /** The file without a tRNS chunk when that chunk is a colour key (grey or RGB images). */
  bytes: Uint8Array;
  orientation: number;
}

/** Walks the chunks: IHDR's depth and colour type, the eXIf orientation, and the file without a colour-key tRNS. */
function chunks(b: Uint8Array): Chunks {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let pos = 8;
  let depth = -1;
  let colorType = -1;
  let orientation = 1;
  let trns: [number, number] | null = null;
  while (pos + 12 <= b.length) {
    const len = dv.getUint32(pos);
    const type = String.fromCharCode(b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]);
    const data = pos + 8;
    if (data + len + 4 > b.length) break;
    if (type === 'IHDR' && len >= 13) {
      depth = b[data + 8];
      colorType = b[data + 9];
    } else if (type === 'eXIf') {
      orientation = exifOrientation(b.subarray(data, data + len));
    } else if (type === 'tRNS' && (colorType === 0 || colorType === 2)) {
      trns = [pos, data + len + 4];
    } else if (type === 'IEND') {
      break;
    }
    pos = data + len + 4;
  }
  let bytes = b;
  if (trns) {
    bytes = new Uint8Array(b.length - (trns[1] - trns[0]));
    bytes.set(b.subarray(0, trns[0]), 0);
    bytes.set(b.subarray(trns[1]), trns[0]);
  }
  return { depth, colorType, bytes, orientation };
}

const MODES: Record<number, string> = { 0: 'L', 2: 'RGB', 3: 'P', 4: 'LA', 6: 'RGBA' };

/** Decodes a PNG; throws pngjs's error on a corrupt file. */
export function decodePng(b: Uint8Array): Decoded {
  const { depth, colorType, bytes, orientation } = chunks(b);
  const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
    skipRescale: depth === 16,
  });
  const grey = colorType === 0 || colorType === 4;
  const px = fromRgba(png.data as ArrayLike<number>, png.width, png.height, grey, depth === 16 ? 8 : 0);
  const mode =
    depth === 1 && colorType === 0 ? '1' : depth === 16 && colorType === 0 ? 'I;16' : (MODES[colorType] ?? '?');
  return { ...px, format: 'png', mode, orientation };
}
