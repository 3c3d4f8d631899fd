/**
 * How far two audits of the same rows agree (the head's, and the last 2 layers'): the Spearman
 * correlation of their suspicion over the rows, the overlap of their k most suspicious rows, and
 * the Jaccard overlap of their memorized flags.
 */
import type { DeepCurvatureMethod } from '../curvature/ggn';
import type { LayerSummary } from '../model/layers';
import type { AuditScores } from './audit';
import { suspicionOrder } from './ranking';
import { flagged, jaccard } from './stability';

export interface Agreement {
  /** The layers the head's audit is compared with, and their curvature. */
  layers: LayerSummary[];
  curvature: DeepCurvatureMethod;
  /** Spearman over the rows whose suspicion is finite in both; |top k ∩ top k| / k. */
  suspicion: { spearman: number; k: number; topOverlap: number };
  /** Jaccard overlap of the flagged rows and how many each flags; null without a held-out set. */
  memorized: { jaccard: number; head: number; layers: number } | null;
  seconds: number;
}

/** Ranks 1..n (ties share their mean rank). */
function ranks(x: Float64Array): Float64Array {
  const idx = Array.from({ length: x.length }, (_, i) => i).sort((a, b) => x[a] - x[b]);
  const r = new Float64Array(x.length);
  for (let k = 0; k < idx.length;) {
    let j = k;
    while (j + 1 < idx.length && x[idx[j + 1]] === x[idx[k]]) j++;
    for (let t = k; t <= j; t++) r[idx[t]] = (k + j) / 2 + 1;
    k = j + 1;
  }
  return r;
}

/** Spearman's rank correlation over the pairs where both values are finite (NaN with fewer than 2, or a constant side). */
export function spearman(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const keep: number[] = [];
  for (let i = 0; i < a.length; i++) if (Number.isFinite(a[i]) && Number.isFinite(b[i])) keep.push(i);
  const ra = ranks(Float64Array.from(keep, (i) => a[i]));
  const rb = ranks(Float64Array.from(keep, (i) => b[i]));
  const m = keep.length;
  const mean = (m + 1) / 2;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < m; i++) {
    sab += (ra[i] - mean) * (rb[i] - mean);
    saa += (ra[i] - mean) ** 2;
    sbb += (rb[i] - mean) ** 2;
  }
  return sab / Math.sqrt(saa * sbb);
}

/** The head's audit against another's over the same rows. */
export function agreement(
  head: AuditScores,
  other: AuditScores,
  k: number,
  about: Pick<Agreement, 'layers' | 'curvature' | 'seconds'>,
): Agreement {
  const kk = Math.min(k, head.n);
  const top = new Set(suspicionOrder(head.suspicion).slice(0, kk));
  const both = suspicionOrder(other.suspicion)
    .slice(0, kk)
    .filter((i) => top.has(i)).length;
  const memorized =
    head.memorized && other.memorized
      ? (() => {
          const a = flagged(head.memorized);
          const b = flagged(other.memorized);
          return { jaccard: jaccard(a, b), head: a.length, layers: b.length };
        })()
      : null;
  return {
    layers: about.layers,
    curvature: about.curvature,
    suspicion: { spearman: spearman(head.suspicion, other.suspicion), k: kk, topOverlap: kk ? both / kk : 1 },
    memorized,
    seconds: about.seconds,
  };
}
