/**
 * Resizing and cropping exactly as torchvision does on PIL images: Pillow's BILINEAR resampling
 * (its 8-bit fixed-point path, antialiased when shrinking), `Resize(n)` on the shorter side with the
 * longer side truncated, and `CenterCrop` with Python's round-half-to-even offsets.
 *
 * Pixels are interleaved 8-bit samples, `c` per pixel, rows top to bottom.
 */

/** Fixed-point bits of Pillow's 8-bit resampling (32 − 8 − 2). */
const BITS = 22;
const HALF = 1 << (BITS - 1);

interface Taps {
  /** Taps per output sample (the widest window). */
  size: number;
  /** Per output sample: first input sample and number of taps. */
  first: Int32Array;
  count: Int32Array;
  /** Fixed-point weights, `size` per output sample. */
  weight: Int32Array;
}

/** The triangle filter's taps for resampling `inSize` samples to `outSize`, as Pillow computes them. */
function taps(inSize: number, outSize: number): Taps {
  const scale = inSize / outSize;
  // Shrinking widens the filter by the scale: that is the antialiasing.
  const filterScale = Math.max(scale, 1);
  const support = filterScale;
  const size = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weight = new Int32Array(outSize * size);
  const w = new Float64Array(size);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    // C's (int) cast truncates towards zero.
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const n = Math.min(Math.trunc(center + support + 0.5), inSize) - lo;
    let sum = 0;
    for (let k = 0; k < n; k++) {
      const t = Math.abs((k + lo - center + 0.5) / filterScale);
      w[k] = t < 1 ? 1 - t : 0;
      sum += w[k];
    }
    for (let k = 0; k < n; k++) {
      const v = sum !== 0 ? w[k] / sum : w[k];
      weight[o * size + k] = v < 0 ? Math.trunc(-0.5 + v * (1 << BITS)) : Math.trunc(0.5 + v * (1 << BITS));
    }
    first[o] = lo;
    count[o] = n;
  }
  return { size, first, count, weight };
}

function clip8(acc: number): number {
  const v = acc >> BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Pillow's `Image.resize((outW, outH), BILINEAR)` on an 8-bit image: a horizontal pass over only the
 * source rows the vertical pass reads, rounded to 8 bits, then the vertical pass. A dimension that
 * keeps its size is not resampled.
 */
export function resizeBilinear(
  src: Uint8Array,
  w: number,
  h: number,
  c: number,
  outW: number,
  outH: number,
): Uint8Array {
  if (outW === w && outH === h) return src.slice();
  const vert = taps(h, outH);
  let cur = src;
  let curW = w;
  let rowShift = 0;
  if (outW !== w) {
    const hor = taps(w, outW);
    const y0 = vert.first[0];
    const y1 = vert.first[outH - 1] + vert.count[outH - 1];
    const rows = outH === h ? h : y1 - y0;
    const from = outH === h ? 0 : y0;
    const tmp = new Uint8Array(outW * rows * c);
    for (let y = 0; y < rows; y++) {
      const si = (y + from) * w * c;
      const di = y * outW * c;
      for (let o = 0; o < outW; o++) {
        const lo = hor.first[o];
        const n = hor.count[o];
        const kb = o * hor.size;
        for (let ch = 0; ch < c; ch++) {
          let acc = HALF;
          for (let k = 0; k < n; k++) acc += src[si + (lo + k) * c + ch] * hor.weight[kb + k];
          tmp[di + o * c + ch] = clip8(acc);
        }
      }
    }
    cur = tmp;
    curW = outW;
    rowShift = from;
  }
  if (outH === h) return cur;
  const stride = curW * c;
  const out = new Uint8Array(stride * outH);
  for (let o = 0; o < outH; o++) {
    const lo = vert.first[o] - rowShift;
    const n = vert.count[o];
    const kb = o * vert.size;
    const di = o * stride;
    for (let i = 0; i < stride; i++) {
      let acc = HALF;
      for (let k = 0; k < n; k++) acc += cur[(lo + k) * stride + i] * vert.weight[kb + k];
      out[di + i] = clip8(acc);
    }
  }
  return out;
}

/**
 * torchvision `Resize(size)` with an int: the shorter side becomes `size`, the longer one
 * `int(size * long / short)` (truncated). Returns [width, height].
 */
export function shorterSideSize(w: number, h: number, size: number): [number, number] {
  if (w <= h) return [size, Math.trunc((size * h) / w)];
  return [Math.trunc((size * w) / h), size];
}

/** Python's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * torchvision `CenterCrop((ch, cw))`: an image smaller than the crop is first padded with zeros
 * on both sides (the left/top pad is (crop − size) // 2), then the window at
 * `top = round((H − ch) / 2)`, `left = round((W − cw) / 2)` is cut out.
 */
export function centerCrop(src: Uint8Array, w: number, h: number, c: number, cw: number, chh: number): Uint8Array {
  let img = src;
  let iw = w;
  let ih = h;
  if (cw > w || chh > h) {
    const padL = cw > w ? Math.floor((cw - w) / 2) : 0;
    const padT = chh > h ? Math.floor((chh - h) / 2) : 0;
    const pw = Math.max(w, cw);
    const ph = Math.max(h, chh);
    const padded = new Uint8Array(pw * ph * c);
    for (let y = 0; y < h; y++) padded.set(src.subarray(y * w * c, (y + 1) * w * c), ((y + padT) * pw + padL) * c);
    img = padded;
    iw = pw;
    ih = ph;
    if (iw === cw && ih === chh) return img;
  }
  const top = roundHalfEven((ih - chh) / 2);
  const left = roundHalfEven((iw - cw) / 2);
  const out = new Uint8Array(cw * chh * c);
  for (let y = 0; y < chh; y++)
    out.set(img.subarray(((y + top) * iw + left) * c, ((y + top) * iw + left + cw) * c), y * cw * c);
  return out;
}
