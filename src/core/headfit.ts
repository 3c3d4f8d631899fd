/**
 * The head that the scores are computed at, shared by explain and audit: the damping, how far the
 * shipped head is from the optimum of the damped objective (stationarity), and, with `--head
 * refit`, the head refit to that optimum, where influence's assumptions hold exactly.
 */
import { resolveDamping, type Damping, type DampingOption } from './curvature/policy';
import type { Engine } from './model/engine';
import { refitRows, type RefitChange } from './refit';
import type { ScoredRows } from './scores/audit';
import { meanLossGradient, stationarity, STATIONARITY_WARN, zeroHeadGradient, type Stationarity } from './task/fit';
import { headTheta } from './task/head';

export type HeadMode = 'shipped' | 'refit';

/** The head the scores describe, as the results report it. */
export interface HeadReport extends Stationarity {
  mode: HeadMode;
  /** What refitting changed (refit mode only). */
  refit: RefitChange | null;
  /** Why the numbers describe a refit head rather than the given one, in words, or null. */
  message: string | null;
}

export interface PreparedHead<R extends ScoredRows> {
  /** The rows as the scored head sees them (the refit head's g, z and loss in refit mode). */
  rows: R;
  /** θ' of the scored head (effective: scale·θ). */
  theta: Float64Array;
  damping: Damping;
  head: HeadReport;
}

/** The damping, the stationarity of the shipped head, and (refit mode) the refit head and its rows. */
export async function prepareHead<R extends ScoredRows>(
  eng: Engine,
  rows: R,
  opts: {
    damping?: DampingOption;
    head?: HeadMode;
    signal?: AbortSignal;
    onProgress?: (stage: string, done: number, total: number) => void;
  },
): Promise<PreparedHead<R>> {
  const { W, b, C, D, scale } = eng.info.head;
  const theta0 = headTheta(W, b, C, D, scale);
  // One pass for the gradient, shared by the implied-L2 rule and the stationarity report.
  const G = await meanLossGradient(rows, opts.signal);
  const damping = resolveDamping(opts.damping, rows, { l2: eng.info.l2, theta: theta0, scale }, G);
  const G0 = zeroHeadGradient(rows);
  const shipped = stationarity(G, G0, theta0, damping.effective, scale);
  if ((opts.head ?? 'shipped') === 'shipped') {
    const message = shipped.warning
      ? `this head is not at the optimum that influence assumes (relative gradient norm ${shipped.relGradNorm.toPrecision(2)} > ${STATIONARITY_WARN}); the estimates describe a refit head; --head refit scores that head exactly`
      : null;
    return { rows, theta: theta0, damping, head: { mode: 'shipped', ...shipped, refit: null, message } };
  }
  const r = refitRows(rows, theta0, damping.effective, scale, { signal: opts.signal, onProgress: opts.onProgress });
  const after = stationarity(await meanLossGradient(r.rows, opts.signal), G0, r.theta, damping.effective, scale);
  const refit: RefitChange = { gradNormBefore: shipped.gradNorm, ...r.change };
  const message = `scored at the head refit to the optimum of the damped objective (${refit.trainPredictionsChanged} training predictions changed; largest logit change ${refit.maxLogitChange.toPrecision(3)})`;
  return { rows: r.rows, theta: r.theta, damping, head: { mode: 'refit', ...after, refit, message } };
}
