/**
 * The words shared by the command line, the extension and the panel: numbers, class names, and
 * what a flagged row's reasons and a loss change mean. No vscode, no DOM.
 */
import type { Reason } from './webview';

/** A signed number with 3 significant digits: +0.0123, -4.56e-5. */
export function fmt(x: number, digits = 3): string {
  if (x === 0) return '0';
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  const s = a >= 1e-3 && a < 1e5 ? x.toPrecision(digits) : x.toExponential(digits - 1);
  return x > 0 ? `+${s}` : s;
}

/** fmt with a real minus sign for the number's own sign (not the exponent's), for display: −0.0123, +8.24e-4. */
export function fmtSigned(x: number, digits = 3): string {
  return Number.isFinite(x) ? fmt(x, digits).replace(/^-/, '−') : String(x);
}

export function className(classes: string[] | null, c: number): string {
  return classes && classes[c] !== undefined && classes[c] !== String(c) ? `${c} (${classes[c]})` : String(c);
}

export function describeReason(r: Reason, classes: string[] | null): string {
  const cls = (c: number) => className(classes, c);
  switch (r.code) {
    case 'LABEL_DISAGREES':
      return `the model predicts ${cls(r.predicted)} (p = ${r.p.toFixed(3)}), not the label`;
    case 'SELF_FLIP':
      return `right only because it is in the training set: without it the prediction becomes ${cls(r.predictedWithout)} (margin ${r.margin.toFixed(3)} → ${r.marginWithout.toFixed(3)})`;
    case 'HARMS_HELD_OUT':
      return `hurts held-out data: removing it would change the mean held-out loss by ${fmt(r.heldOutLossChangeIfRemoved)}`;
    case 'HIGH_SELF_INFLUENCE':
      return `unusually high self-influence (${r.selfInfluence.toPrecision(3)}, top ${100 - r.percentile}%)`;
    case 'LOO_LOSS':
      return `its loss rises from ${r.loss.toFixed(3)} to ${r.lossWithout.toFixed(3)} when the model is refit without it`;
    case 'SELF_FLIP_FIRST_ORDER':
      return `right only because it is in the training set, to first order: without it its loss would rise from ${r.loss.toFixed(3)} to ${r.lossWithout.toFixed(3)}, its label's probability below 1/2`;
  }
}

/** The meaning of a first-order loss change, in words. */
export function describeLossChange(change: number): string {
  if (change > 0)
    return `removing this row would raise the test loss by ${fmt(change).slice(1)} (first-order estimate): it helps this prediction`;
  if (change < 0)
    return `removing this row would lower the test loss by ${fmt(-change).slice(1)} (first-order estimate): it hurts this prediction`;
  return 'removing this row would not change the test loss (first-order estimate)';
}

/**
 * "Is the head enough here?" in one phrase: the verdict with Spearman's ρ and the top-k overlaps;
 * for a head result that deeper layers change, where to look instead.
 */
export function describeAgreement(
  a: {
    faithful: boolean;
    spearman: number;
    k: number;
    helpful: { overlap: number; of: number };
    harmful: { overlap: number; of: number };
  },
  headResult: boolean,
): string {
  const rho = Number.isFinite(a.spearman) ? a.spearman.toFixed(2) : 'n/a';
  const numbers = `ρ = ${rho}, top-${a.k} overlap ${a.helpful.overlap}/${a.helpful.of} helpful, ${a.harmful.overlap}/${a.harmful.of} harmful`;
  if (a.faithful) return `head-only is faithful here (${numbers})`;
  return `deeper layers change the answer${headResult ? ': view with the last 2 layers' : ''} (${numbers})`;
}

/**
 * The layers a score was taken over, in words: "the head '/head/Gemm'", "the last 2 layers
 * ('/head/Gemm', '/fc2/Gemm'; exact Gauss–Newton)", "all 3 layers (…; EK-FAC per layer)".
 */
const plural = (k: number, word: string) => `${k} ${word}${k === 1 ? '' : 's'}`;

export function describeLayerSet(
  layers: { index: number; name: string }[],
  curvature: 'exact' | 'ekfac' | null,
  available: number,
): string {
  const names = layers.map((l) => `'${l.name}'`).join(', ');
  // Layers 1..k (from the output), or a choice by name that skips some.
  const last = layers.every((l, i) => l.index === i + 1);
  if (last && layers.length === 1) return `the head ${names}`;
  const which = !last
    ? plural(layers.length, 'layer')
    : layers.length === available
      ? `all ${available} layers`
      : `the last ${layers.length} layers`;
  return `${which} (${names}; ${curvature === 'ekfac' ? 'EK-FAC per layer' : 'exact Gauss–Newton'})`;
}
