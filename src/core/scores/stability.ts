/**
 * How much the answer depends on the damping: the top rows (explain) or the flagged rows (audit)
 * at λ, λ/10 and 10λ, compared by Jaccard overlap. The curvature's statistics are computed once
 * (Curvature.withDamping), so each extra damping costs a factorisation or solve; explain's ranking
 * needs only the first-order scores there (one solve each, and one pass over the rows for both).
 */
import type { Curvature } from '../curvature/curvature';
import type { HeadRows } from '../task/head';
import type { AuditScores } from './audit';
import { lossChangesAt, type ExplainOptions, type TestPoint } from './explain';
import { suspicionOrder, topRows } from './ranking';

/** Below this Jaccard overlap (at either neighbouring damping) a set is "sensitive to damping". */
export const STABLE_JACCARD = 0.5;
/** The factor between the neighbouring dampings and λ. */
export const STABILITY_FACTOR = 10;

export interface Stability {
  /** The sets compared: the top k, or the memorized flags. */
  k: number;
  /** λ/10, λ, 10λ (on θ). */
  dampings: [number, number, number];
  /** Jaccard overlap of each set at λ with the same set at λ/10 and at 10λ. */
  overlaps: Record<string, [number, number]>;
  stable: boolean;
}

/** |A ∩ B| / |A ∪ B| (1 for two empty sets). */
export function jaccard(a: Iterable<number>, b: Iterable<number>): number {
  const A = new Set(a);
  const B = new Set(b);
  let both = 0;
  for (const x of A) if (B.has(x)) both++;
  const union = A.size + B.size - both;
  return union === 0 ? 1 : both / union;
}

export function summarise(k: number, damping: number, sets: Record<string, number[][]>): Stability {
  const overlaps: Record<string, [number, number]> = {};
  let worst = 1;
  for (const [name, [low, mid, high]] of Object.entries(sets)) {
    overlaps[name] = [jaccard(mid, low), jaccard(mid, high)];
    worst = Math.min(worst, ...overlaps[name]);
  }
  return {
    k,
    dampings: [damping / STABILITY_FACTOR, damping, damping * STABILITY_FACTOR],
    overlaps,
    stable: worst >= STABLE_JACCARD,
  };
}

/**
 * explain's top-k helpful and harmful rows (by lossChangeIfRemoved) at λ/10, λ and 10λ.
 * `lossChange` holds the scores at λ; `damping` is λ on θ and `scale` the logits' factor.
 */
export async function explainStability(
  rows: HeadRows,
  test: TestPoint,
  opts: ExplainOptions,
  curv: Curvature,
  lossChange: Float64Array,
  k: number,
  damping: number,
): Promise<Stability> {
  const low = await curv.withDamping(opts.damping / STABILITY_FACTOR, opts.signal, 'solves');
  let high: Curvature | null = null;
  let sets;
  try {
    high = await curv.withDamping(opts.damping * STABILITY_FACTOR, opts.signal, 'solves');
    sets = (await lossChangesAt(rows, test, [low, high], opts.signal)).map((v) => topRows(v, k));
  } finally {
    await low.release();
    await high?.release();
  }
  const mid = topRows(lossChange, k);
  return summarise(k, damping, {
    helpful: [sets[0].helpful, mid.helpful, sets[1].helpful],
    harmful: [sets[0].harmful, mid.harmful, sets[1].harmful],
  });
}

/**
 * The memorized flags (with a held-out set) and the k most suspicious rows at λ/10, λ and 10λ:
 * `scores` are those at λ, and `at(f)` computes them at f·λ (for the head or beyond it).
 */
export async function auditStability(
  scores: AuditScores,
  k: number,
  damping: number,
  at: (factor: number) => Promise<AuditScores>,
): Promise<Stability> {
  const sets = (s: AuditScores) => ({
    suspicious: suspicionOrder(s.suspicion).slice(0, k),
    memorized: s.memorized ? flagged(s.memorized) : [],
  });
  const low = sets(await at(1 / STABILITY_FACTOR));
  const high = sets(await at(STABILITY_FACTOR));
  const mid = sets(scores);
  const compared: Record<string, number[][]> = { suspicious: [low.suspicious, mid.suspicious, high.suspicious] };
  if (scores.memorized) compared.memorized = [low.memorized, mid.memorized, high.memorized];
  return summarise(k, damping, compared);
}

/** The rows flagged in a 0/1 array. */
export function flagged(memorized: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < memorized.length; i++) if (memorized[i]) out.push(i);
  return out;
}
