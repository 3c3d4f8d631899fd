/**
 * Decoded pixels and the conversions between them, as Pillow does them: alpha dropped (no
 * compositing, like `convert('RGB')`), grey → RGB by copying, RGB → grey by ITU-R 601-2 luma in
 * Pillow's fixed point, and the eight EXIF orientations.
 */

/** An 8-bit image: `channels` interleaved samples per pixel, rows top to bottom. */
export interface Pixels {
  width: number;
  height: number;
  /** 1 (grey) or 3 (RGB). */
  channels: 1 | 3;
  data: Uint8Array;
}

/** A decoded file: its pixels and what it was. */
export interface Decoded extends Pixels {
  format: 'png' | 'jpeg' | 'webp' | 'bmp';
  /** Pillow's name for the file's mode: L, LA, 1, I;16, P, RGB, RGBA, … */
  mode: string;
  /** EXIF orientation (1–8; 1 when the file has none). */
  orientation: number;
}

/** Interleaved RGBA (or any 4-sample) data → grey (the first sample) or RGB, alpha dropped. */
export function fromRgba(rgba: ArrayLike<number>, width: number, height: number, grey: boolean, shift = 0): Pixels {
  const n = width * height;
  if (grey) {
    const data = new Uint8Array(n);
    for (let i = 0; i < n; i++) data[i] = rgba[4 * i] >> shift;
    return { width, height, channels: 1, data };
  }
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    data[3 * i] = rgba[4 * i] >> shift;
    data[3 * i + 1] = rgba[4 * i + 1] >> shift;
    data[3 * i + 2] = rgba[4 * i + 2] >> shift;
  }
  return { width, height, channels: 3, data };
}

/** Pillow's `convert('L')` of RGB: (R·19595 + G·38470 + B·7471 + 2^15) >> 16. */
export function toGrey(p: Pixels): Pixels {
  if (p.channels === 1) return p;
  const n = p.width * p.height;
  const out = new Uint8Array(n);
  const d = p.data;
  for (let i = 0; i < n; i++) out[i] = (d[3 * i] * 19595 + d[3 * i + 1] * 38470 + d[3 * i + 2] * 7471 + 0x8000) >>> 16;
  return { width: p.width, height: p.height, channels: 1, data: out };
}

/** Pillow's `convert('RGB')` of grey: the value in every channel. */
export function toRgb(p: Pixels): Pixels {
  if (p.channels === 3) return p;
  const n = p.width * p.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = p.data[i];
  return { width: p.width, height: p.height, channels: 3, data: out };
}

/**
 * The image as EXIF orientation `o` says it should be shown (Pillow's `ImageOps.exif_transpose`):
 * 2 mirror, 3 rotate 180°, 4 flip, 5 transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90°
 * counter-clockwise.
 */
export function orient<T extends Pixels>(p: T, o: number): T {
  if (!(o >= 2 && o <= 8)) return p;
  const { width: w, height: h, channels: c, data } = p;
  const swap = o >= 5;
  const W = swap ? h : w;
  const H = swap ? w : h;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      // (sx, sy): the source pixel shown at (x, y).
      let sx: number;
      let sy: number;
      switch (o) {
        case 2:
          sx = w - 1 - x;
          sy = y;
          break;
        case 3:
          sx = w - 1 - x;
          sy = h - 1 - y;
          break;
        case 4:
          sx = x;
          sy = h - 1 - y;
          break;
        case 5:
          sx = y;
          sy = x;
          break;
        case 6:
          sx = y;
          sy = h - 1 - x;
          break;
        case 7:
          sx = w - 1 - y;
          sy = h - 1 - x;
          break;
        default:
          sx = w - 1 - y;
          sy = x;
          break; // 8
      }
      const si = (sy * w + sx) * c;
      const di = (y * W + x) * c;
      for (let k = 0; k < c; k++) out[di + k] = data[si + k];
    }
  }
  return { ...p, width: W, height: H, data: out };
}

/** Reads the Orientation tag (0x0112) of a TIFF-structured EXIF block; 1 when absent or unreadable. */
export function exifOrientation(tiff: Uint8Array): number {
  if (tiff.length < 8) return 1;
  const le = tiff[0] === 0x49 && tiff[1] === 0x49;
  const be = tiff[0] === 0x4d && tiff[1] === 0x4d;
  if (!le && !be) return 1;
  const u16 = (o: number) => (le ? tiff[o] | (tiff[o + 1] << 8) : (tiff[o] << 8) | tiff[o + 1]);
  const u32 = (o: number) =>
    le
      ? (tiff[o] | (tiff[o + 1] << 8) | (tiff[o + 2] << 16)) + tiff[o + 3] * 2 ** 24
      : ((tiff[o + 1] << 16) | (tiff[o + 2] << 8) | tiff[o + 3]) + tiff[o] * 2 ** 24;
  if (u16(2) !== 42) return 1;
  const ifd = u32(4);
  if (ifd + 2 > tiff.length) return 1;
  const count = u16(ifd);
  for (let i = 0; i < count; i++) {
    const e = ifd + 2 + 12 * i;
    if (e + 12 > tiff.length) return 1;
    if (u16(e) === 0x0112) {
      const v = u16(e + 8);
      return v >= 1 && v <= 8 ? v : 1;
    }
  }
  return 1;
}
