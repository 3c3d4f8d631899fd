/** Statistics shared by the tests that compare the engine with references. */
export { pearson, spearman } from '../../src/core/scores/agreement';

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
