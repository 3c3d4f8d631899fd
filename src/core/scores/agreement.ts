/**
 * "Is the head enough here?": two rankings of the training rows for one test prediction (the
 * head's lossChangeIfRemoved and the deeper layers'), compared by Spearman's rank correlation over
 * every row and by the overlap of their top-k helpful and harmful rows, with the verdict.
 */
import type { DeepCurvatureMethod } from '../curvature/ggn';
import type { SolverKind } from '../curvature/policy';
import type { LayerSummary } from '../model/layers';
import { topRows } from './ranking';

/** The top rows compared: the panel's and the CLI's default lists. */
export const AGREEMENT_TOP = 10;
/**
 * Head-only is called faithful when ρ ≥ FAITHFUL_RHO and both top-10 overlaps are at least
 * FAITHFUL_OVERLAP of the list (7 of 10): our reading of "the same answer" (a user acts on the top
 * rows), not a threshold fitted to retraining; the numbers themselves are always reported.
 */
export const FAITHFUL_RHO = 0.9;
export const FAITHFUL_OVERLAP = 0.7;

/** Ranks 1..n, ties sharing their mean rank. */
export function ranks(x: ArrayLike<number>): Float64Array {
  const idx = Uint32Array.from({ length: x.length }, (_, i) => i).sort((a, b) => x[a] - x[b]);
  const r = new Float64Array(x.length);
  for (let k = 0; k < idx.length;) {
    let j = k;
    while (j + 1 < idx.length && x[idx[j + 1]] === x[idx[k]]) j++;
    for (let t = k; t <= j; t++) r[idx[t]] = (k + j) / 2 + 1;
    k = j + 1;
  }
  return r;
}

/** Pearson correlation (NaN when either is constant). */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i] / n;
    my += y[i] / n;
  }
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  return sxy / Math.sqrt(sxx * syy);
}

/**
 * Spearman rank correlation: Pearson of the ranks (ties at their mean rank), over the pairs where
 * both values are finite (a non-finite score, which a NON_FINITE warning names, has no rank).
 */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const keep: number[] = [];
  for (let i = 0; i < x.length; i++) if (Number.isFinite(x[i]) && Number.isFinite(y[i])) keep.push(i);
  if (keep.length === x.length) return pearson(ranks(x), ranks(y));
  return pearson(ranks(keep.map((i) => x[i])), ranks(keep.map((i) => y[i])));
}

/** The top-k rows of one kind by each score, and how many they share. */
export interface TopOverlap {
  /** Rows in both lists. */
  overlap: number;
  /** The longer list's length: k unless fewer rows have that sign. */
  of: number;
  head: number[];
  deeper: number[];
}

export interface RankAgreement {
  /** Spearman's ρ of the two lossChangeIfRemoved over every training row. */
  spearman: number;
  k: number;
  helpful: TopOverlap;
  harmful: TopOverlap;
  /** ρ ≥ FAITHFUL_RHO and both overlaps ≥ FAITHFUL_OVERLAP of their lists. */
  faithful: boolean;
}

function overlap(head: number[], deeper: number[]): TopOverlap {
  const d = new Set(deeper);
  return { overlap: head.filter((i) => d.has(i)).length, of: Math.max(head.length, deeper.length), head, deeper };
}

const enough = (o: TopOverlap) => o.overlap >= FAITHFUL_OVERLAP * o.of - 1e-9;

/** The head's and the deeper layers' lossChangeIfRemoved compared. */
export function compareRankings(head: Float64Array, deeper: Float64Array, k = AGREEMENT_TOP): RankAgreement {
  const rho = spearman(head, deeper);
  const h = topRows(head, k);
  const d = topRows(deeper, k);
  const helpful = overlap(h.helpful, d.helpful);
  const harmful = overlap(h.harmful, d.harmful);
  return { spearman: rho, k, helpful, harmful, faithful: rho >= FAITHFUL_RHO && enough(helpful) && enough(harmful) };
}

/** One side of the comparison: the layers influence was taken over, and how. */
export interface AgreementSide {
  layers: LayerSummary[];
  /** Beyond the head, 'exact' GGN or 'ekfac'; null for the head's own policy. */
  curvature: DeepCurvatureMethod | null;
  solver: SolverKind | 'ekfac';
}

/** explain's "is the head enough here?": the head's ranking against the deeper layers', at one λ. */
export interface Agreement extends RankAgreement {
  damping: number;
  head: AgreementSide;
  deeper: AgreementSide;
}
