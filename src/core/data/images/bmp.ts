/**
 * A BMP decoder giving Pillow's values: core (OS/2) and Windows info headers (v1–v5), 1/4/8-bit
 * palettes, 16-bit 5-5-5 and 5-6-5 (expanded as Pillow does, v·255/31 truncated), 24-bit, and 32-bit
 * with or without bit fields; bottom-up or top-down rows. RLE compression is refused.
 */
import type { Decoded } from './pixels';

export function isBmp(b: Uint8Array): boolean {
  return b.length >= 26 && b[0] === 0x42 && b[1] === 0x4d;
}

/** Thrown for a BMP this decoder does not read (as opposed to a corrupt one). */
export class BmpUnsupported extends Error {}

export function decodeBmp(b: Uint8Array): Decoded {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const need = (end: number) => {
    if (end > b.length) throw new Error('BMP data is truncated');
  };
  need(18);
  const dataOffset = dv.getUint32(10, true);
  const headerSize = dv.getUint32(14, true);
  need(14 + headerSize);
  let width: number;
  let height: number;
  let bits: number;
  let compression = 0;
  let colorsUsed = 0;
  let masks: number[] | null = null;
  let paletteEntry = 4;
  if (headerSize === 12) {
    width = dv.getUint16(18, true);
    height = dv.getInt16(20, true);
    bits = dv.getUint16(24, true);
    paletteEntry = 3;
  } else if (headerSize >= 40) {
    width = dv.getInt32(18, true);
    height = dv.getInt32(22, true);
    bits = dv.getUint16(28, true);
    compression = dv.getUint32(30, true);
    colorsUsed = dv.getUint32(46, true);
    if (compression === 3 || compression === 6) {
      // Bit fields follow a 40-byte header, or are part of a larger one.
      const at = 14 + 40;
      need(at + (compression === 6 ? 16 : 12));
      masks = [dv.getUint32(at, true), dv.getUint32(at + 4, true), dv.getUint32(at + 8, true)];
    }
  } else {
    throw new BmpUnsupported(`a BMP header of ${headerSize} bytes is not supported`);
  }
  if (compression === 1 || compression === 2) throw new BmpUnsupported('RLE-compressed BMP is not supported');
  if (compression !== 0 && compression !== 3 && compression !== 6)
    throw new BmpUnsupported(`BMP compression ${compression} is not supported`);
  if (![1, 4, 8, 16, 24, 32].includes(bits)) throw new BmpUnsupported(`${bits}-bit BMP is not supported`);
  if (width <= 0 || height === 0) throw new Error(`bad BMP size ${width}×${height}`);
  const topDown = height < 0;
  height = Math.abs(height);
  const stride = Math.ceil((width * bits) / 32) * 4;
  need(dataOffset + stride * (height - 1) + Math.ceil((width * bits) / 8));

  let palette: Uint8Array | null = null;
  let grey = false;
  if (bits <= 8) {
    const n = colorsUsed > 0 && colorsUsed <= 1 << bits ? colorsUsed : 1 << bits;
    const at = 14 + headerSize + (masks && headerSize === 40 ? (compression === 6 ? 16 : 12) : 0);
    const count = Math.max(0, Math.min(n, Math.floor((dataOffset - at) / paletteEntry)));
    palette = new Uint8Array(256 * 3);
    grey = true;
    for (let i = 0; i < count; i++) {
      const bb = b[at + i * paletteEntry];
      const g = b[at + i * paletteEntry + 1];
      const r = b[at + i * paletteEntry + 2];
      palette.set([r, g, bb], i * 3);
      if (r !== g || g !== bb) grey = false;
    }
  }
  const channels = grey ? 1 : 3;
  const out = new Uint8Array(width * height * channels);
  const field = masks ? masks.map(maskShape) : null;
  for (let y = 0; y < height; y++) {
    const row = dataOffset + (topDown ? y : height - 1 - y) * stride;
    for (let x = 0; x < width; x++) {
      let r: number;
      let g: number;
      let bl: number;
      if (palette) {
        const bit = x * bits;
        const byte = b[row + (bit >> 3)];
        const idx = bits === 8 ? byte : (byte >> (8 - bits - (bit & 7))) & ((1 << bits) - 1);
        r = palette[idx * 3];
        g = palette[idx * 3 + 1];
        bl = palette[idx * 3 + 2];
      } else if (bits === 24) {
        const p = row + x * 3;
        bl = b[p];
        g = b[p + 1];
        r = b[p + 2];
      } else if (bits === 16) {
        const v = b[row + 2 * x] | (b[row + 2 * x + 1] << 8);
        if (field && field[1].bits === 6) {
          r = Math.trunc((((v >> 11) & 31) * 255) / 31);
          g = Math.trunc((((v >> 5) & 63) * 255) / 63);
          bl = Math.trunc(((v & 31) * 255) / 31);
        } else {
          r = Math.trunc((((v >> 10) & 31) * 255) / 31);
          g = Math.trunc((((v >> 5) & 31) * 255) / 31);
          bl = Math.trunc(((v & 31) * 255) / 31);
        }
      } else {
        const p = row + x * 4;
        if (field) {
          const v = dv.getUint32(p, true);
          r = take(v, field[0]);
          g = take(v, field[1]);
          bl = take(v, field[2]);
        } else {
          bl = b[p];
          g = b[p + 1];
          r = b[p + 2];
        }
      }
      if (channels === 1) out[y * width + x] = r;
      else out.set([r, g, bl], (y * width + x) * 3);
    }
  }
  const mode = palette ? (grey ? 'L' : 'P') : 'RGB';
  return { width, height, channels, data: out, format: 'bmp', mode, orientation: 1 };
}

function maskShape(mask: number): { shift: number; bits: number } {
  if (mask === 0) return { shift: 0, bits: 0 };
  let shift = 0;
  while (((mask >>> shift) & 1) === 0) shift++;
  let bits = 0;
  while (((mask >>> (shift + bits)) & 1) === 1) bits++;
  return { shift, bits };
}

/** A bit field's value scaled to 8 bits (an 8-bit field as it is). */
function take(v: number, f: { shift: number; bits: number }): number {
  if (f.bits === 0) return 0;
  const x = (v >>> f.shift) & (2 ** f.bits - 1);
  return f.bits === 8 ? x : f.bits > 8 ? x >>> (f.bits - 8) : Math.trunc((x * 255) / (2 ** f.bits - 1));
}
