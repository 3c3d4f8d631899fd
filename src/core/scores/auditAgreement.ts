/**
 * How far two audits of the same rows agree (the head's, and the last 2 layers'): the Spearman
 * correlation of their suspicion over the rows, the overlap of their k most suspicious rows, and
 * the Jaccard overlap of their memorized flags.
 */
import type { DeepCurvatureMethod } from '../curvature/ggn';
import type { LayerSummary } from '../model/layers';
import type { AuditScores } from './audit';
import { spearman } from './agreement';
import { suspicionOrder } from './ranking';
import { flagged, jaccard } from './stability';

export interface AuditAgreement {
  /** The layers the head's audit is compared with, and their curvature. */
  layers: LayerSummary[];
  curvature: DeepCurvatureMethod;
  /** Spearman over the rows whose suspicion is finite in both; |top k ∩ top k| / k. */
  suspicion: { spearman: number; k: number; topOverlap: number };
  /** Jaccard overlap of the flagged rows and how many each flags; null without a held-out set. */
  memorized: { jaccard: number; head: number; layers: number } | null;
  seconds: number;
}

/** The head's audit against another's over the same rows. */
export function agreement(
  head: AuditScores,
  other: AuditScores,
  k: number,
  about: Pick<AuditAgreement, 'layers' | 'curvature' | 'seconds'>,
): AuditAgreement {
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
