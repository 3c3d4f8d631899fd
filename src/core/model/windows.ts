/**
 * Sliding windows (Conv, MaxPool, AveragePool) as index tables, so that the backward graph can
 * run them in float64 with Gather and ReduceSum (onnxruntime's CPU Conv and ConvTranspose take
 * float32 only): im2col gathers each output position's window from the flattened input, and
 * col2im sums the window entries back into the input positions they came from.
 */

/** One window geometry over a spatial grid (rank d), pads as [begins…, ends…]. */
export interface WindowGeometry {
  inSpatial: number[];
  outSpatial: number[];
  kernel: number[];
  strides: number[];
  dilations: number[];
  pads: number[];
}

const prod = (a: number[]) => a.reduce((x, y) => x * y, 1);

/**
 * Pads that ONNX's auto_pad implies for an input and output size (NOTSET: the explicit pads).
 * SAME_UPPER puts the odd pad at the end, SAME_LOWER at the beginning; VALID pads nothing.
 */
export function resolvePads(autoPad: string, pads: number[], w: Omit<WindowGeometry, 'pads'>): number[] {
  const d = w.kernel.length;
  if (autoPad === 'NOTSET' || autoPad === '') return pads.length === 2 * d ? pads : new Array(2 * d).fill(0);
  if (autoPad === 'VALID') return new Array(2 * d).fill(0);
  const begin: number[] = [];
  const end: number[] = [];
  for (let a = 0; a < d; a++) {
    const total = Math.max(
      0,
      (w.outSpatial[a] - 1) * w.strides[a] + (w.kernel[a] - 1) * w.dilations[a] + 1 - w.inSpatial[a],
    );
    const small = Math.floor(total / 2);
    begin.push(autoPad === 'SAME_LOWER' ? total - small : small);
    end.push(autoPad === 'SAME_LOWER' ? small : total - small);
  }
  return [...begin, ...end];
}

/**
 * pos[t·Q + q]: the flat input position (row-major over inSpatial) of window offset q (row-major
 * over the kernel) at output position t (row-major over outSpatial), or −1 in the padding. With
 * `bounds`, also whether the position lies within the padded extent [−begin, in + end) (for
 * AveragePool's count_include_pad).
 */
export function windowPositions(w: WindowGeometry): { T: number; Q: number; pos: Int32Array; padded: Uint8Array } {
  const d = w.kernel.length;
  const T = prod(w.outSpatial);
  const Q = prod(w.kernel);
  const pos = new Int32Array(T * Q);
  const padded = new Uint8Array(T * Q);
  const oc = new Array(d).fill(0);
  for (let t = 0; t < T; t++) {
    let r = t;
    for (let a = d - 1; a >= 0; a--) {
      oc[a] = r % w.outSpatial[a];
      r = Math.floor(r / w.outSpatial[a]);
    }
    for (let q = 0; q < Q; q++) {
      let rq = q;
      let flat = 0;
      let inside = true;
      let inPad = true;
      const coords = new Array(d);
      for (let a = d - 1; a >= 0; a--) {
        coords[a] = rq % w.kernel[a];
        rq = Math.floor(rq / w.kernel[a]);
      }
      for (let a = 0; a < d; a++) {
        const c = oc[a] * w.strides[a] - w.pads[a] + coords[a] * w.dilations[a];
        if (c < 0 || c >= w.inSpatial[a]) inside = false;
        if (c < -w.pads[a] || c >= w.inSpatial[a] + w.pads[d + a]) inPad = false;
        flat = flat * w.inSpatial[a] + c;
      }
      pos[t * Q + q] = inside ? flat : -1;
      padded[t * Q + q] = inPad ? 1 : 0;
    }
  }
  return { T, Q, pos, padded };
}

/**
 * im2col for a Conv over `channels` input channels: idx[t, c·Q + q] indexes the input flattened
 * as [channels·S] with one extra entry (index channels·S, the padding value) appended.
 */
export function convPatchIndex(w: WindowGeometry, channels: number): { T: number; K: number; index: number[] } {
  const S = prod(w.inSpatial);
  const { T, Q, pos } = windowPositions(w);
  const K = channels * Q;
  const index = new Array<number>(T * K);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < channels; c++) {
      for (let q = 0; q < Q; q++) {
        const p = pos[t * Q + q];
        index[t * K + c * Q + q] = p < 0 ? channels * S : c * S + p;
      }
    }
  }
  return { T, K, index };
}

/**
 * col2im: for each input entry e (of `entries`), the entries of a source tensor that sum into it,
 * as a table [entries, L] padded with `pad` (the index of an appended zero). `sources(e)` lists them.
 */
export function gatherSumTable(
  entries: number,
  pad: number,
  sources: (add: (e: number, src: number) => void) => void,
): { L: number; index: number[] } {
  const lists: number[][] = Array.from({ length: entries }, () => []);
  sources((e, src) => lists[e].push(src));
  const L = Math.max(1, ...lists.map((l) => l.length));
  const index = new Array<number>(entries * L).fill(pad);
  lists.forEach((l, e) => l.forEach((src, j) => (index[e * L + j] = src)));
  return { L, index };
}

/** col2im for a Conv: input entry c·S + p sums the patch entries t·K + c·Q + q (K = channels·Q) that read it. */
export function convScatterIndex(w: WindowGeometry, channels: number): { L: number; index: number[] } {
  const S = prod(w.inSpatial);
  const { T, Q, pos } = windowPositions(w);
  const K = channels * Q;
  return gatherSumTable(channels * S, T * K, (add) => {
    for (let t = 0; t < T; t++)
      for (let q = 0; q < Q; q++) {
        const p = pos[t * Q + q];
        if (p >= 0) for (let c = 0; c < channels; c++) add(c * S + p, t * K + c * Q + q);
      }
  });
}

/** Pooling windows per channel: idx[c·T + t, q] indexes the input flattened as [channels·S] plus one padding entry. */
export function poolPatchIndex(w: WindowGeometry, channels: number): { T: number; Q: number; index: number[] } {
  const S = prod(w.inSpatial);
  const { T, Q, pos } = windowPositions(w);
  const index = new Array<number>(channels * T * Q);
  for (let c = 0; c < channels; c++)
    for (let t = 0; t < T; t++)
      for (let q = 0; q < Q; q++) {
        const p = pos[t * Q + q];
        index[(c * T + t) * Q + q] = p < 0 ? channels * S : c * S + p;
      }
  return { T, Q, index };
}

/** col2im for pooling windows: input entry c·S + p sums the window entries (c·T + t)·Q + q that read it. */
export function poolScatterIndex(w: WindowGeometry, channels: number): { L: number; index: number[] } {
  const S = prod(w.inSpatial);
  const { T, Q, pos } = windowPositions(w);
  return gatherSumTable(channels * S, channels * T * Q, (add) => {
    for (let c = 0; c < channels; c++)
      for (let t = 0; t < T; t++)
        for (let q = 0; q < Q; q++) {
          const p = pos[t * Q + q];
          if (p >= 0) add(c * S + p, (c * T + t) * Q + q);
        }
  });
}

/** AveragePool's divisor per output position: the window's entries inside the input, or (count_include_pad) inside the padded extent. */
export function poolCounts(w: WindowGeometry, includePad: boolean): Float64Array {
  const { T, Q, pos, padded } = windowPositions(w);
  const counts = new Float64Array(T);
  for (let t = 0; t < T; t++)
    for (let q = 0; q < Q; q++) if (includePad ? padded[t * Q + q] : pos[t * Q + q] >= 0) counts[t]++;
  return counts;
}

export { prod as product };
