/** Statistics shared by the tests that compare the engine with references. */

/** ‖a − b‖ / ‖b‖. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** Pearson correlation. */
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

/** Least-squares slope through the origin of y on x. */
export function slope(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < x.length; i++) {
    sxy += x[i] * y[i];
    sxx += x[i] * x[i];
  }
  return sxy / sxx;
}

/** ROC AUC of `score` for the positives (ties count half). */
export function auc(score: ArrayLike<number>, pos: boolean[]): number {
  const idx = Array.from({ length: pos.length }, (_, i) => i).sort((a, b) => score[a] - score[b]);
  let rankSum = 0;
  let np = 0;
  let k = 0;
  while (k < idx.length) {
    let j = k;
    while (j + 1 < idx.length && score[idx[j + 1]] === score[idx[k]]) j++;
    const mid = (k + j) / 2 + 1;
    for (let t = k; t <= j; t++)
      if (pos[idx[t]]) {
        rankSum += mid;
        np++;
      }
    k = j + 1;
  }
  return (rankSum - (np * (np + 1)) / 2) / (np * (pos.length - np));
}

/** Ranks 1..n, ties sharing their mean rank. */
function ranks(x: ArrayLike<number>): Float64Array {
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

/** Spearman rank correlation: Pearson of the ranks. */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  return pearson(ranks(x), ranks(y));
}
