/**
 * Warnings: signs that a result is probably wrong, found after the pass over the training rows.
 * (A note says what the tool decided on the user's behalf; a warning says what to check.)
 *
 * - CLASS_ORDER: the labels fit the model's classes far better in another order (the class names
 *   passed in the wrong order, or labels encoded differently from the model's training).
 * - LOW_ACCURACY: training accuracy near chance, and no other class order does better.
 * - NON_FINITE: some per-row scores are not finite numbers (null in the JSON, n/a in the table).
 */
import type { ClassesFrom } from './data/choose';
import { maxAssignment } from './linalg';
import type { Task } from './task/loss';

export interface ClassOrderWarning {
  code: 'CLASS_ORDER';
  message: string;
  /** Training accuracy under the class order used. */
  accuracy: number;
  /** Training accuracy under the best order. */
  bestAccuracy: number;
  /** The class names in the order that fits (bestClasses[c] names the model's class c), or null without names. */
  bestClasses: string[] | null;
  /** labelToClass[y]: the model's class that the rows labelled y fit best. */
  labelToClass: number[];
}

export interface LowAccuracyWarning {
  code: 'LOW_ACCURACY';
  message: string;
  accuracy: number;
}

export interface NonFiniteWarning {
  code: 'NON_FINITE';
  message: string;
  /** Per score with non-finite values: how many rows, and the first few of them. */
  scores: Record<string, { count: number; rows: number[] }>;
}

export type Warning = ClassOrderWarning | LowAccuracyWarning | NonFiniteWarning;

/** Where the class names of the labels came from, for the words of a warning. */
export type { ClassesFrom };

/** The class order used, in the words of the CLASS_ORDER warning. */
const CLASSES_FROM: Record<NonNullable<ClassesFrom>, string> = {
  option: 'the --classes order',
  labels: 'the sorted class names',
  metadata: "the model's class names",
  folders: "the class folders' sorted order",
  classLabel: "the file's ClassLabel names",
};

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/**
 * The class-order check on the training rows: warns when training accuracy under the label
 * mapping is below 1.5/C, or below half the accuracy of the best class permutation, and a
 * permutation does better. The best permutation maximises the trace of the permuted confusion
 * matrix: an assignment problem on the C×C counts (linalg.maxAssignment).
 */
export function classOrderWarning(
  rows: { n: number; C: number; z: Float64Array; labels: Int32Array },
  task: Task,
  classes: string[] | null,
  classesFrom: ClassesFrom,
): ClassOrderWarning | LowAccuracyWarning | null {
  const K = task.classes;
  const { n, C } = rows;
  if (n === 0) return null;
  const counts = new Float64Array(K * K);
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const y = rows.labels[i];
    const p = task.prediction(rows.z.subarray(i * C, (i + 1) * C)).predicted;
    counts[y * K + p]++;
    if (y === p) correct++;
  }
  const accuracy = correct / n;
  const chance = 1.5 / K;
  // Below half the best is possible only below 50% (the best is at most 100%).
  if (accuracy >= chance && accuracy >= 0.5) return null;
  const labelToClass = maxAssignment(counts, K);
  let fit = 0;
  for (let y = 0; y < K; y++) fit += counts[y * K + labelToClass[y]];
  const bestAccuracy = fit / n;
  if (fit <= correct) {
    if (accuracy >= chance || K < 3) return null;
    return {
      code: 'LOW_ACCURACY',
      accuracy,
      message: `training accuracy is ${pct(accuracy)}, below 1.5/C = ${pct(chance)}, and no other class order does better: check the label column and that the model was trained on these labels`,
    };
  }
  if (accuracy >= chance && accuracy >= bestAccuracy / 2) return null;
  const order = Array.from(labelToClass);
  const used = classesFrom ? CLASSES_FROM[classesFrom] : 'the label ids';
  const head = `training accuracy under ${used} is ${pct(accuracy)}, ${accuracy < chance ? `below 1.5/C = ${pct(chance)}` : `below half of ${pct(bestAccuracy)}`}; another class order gives ${pct(bestAccuracy)}`;
  if (classes && classes.length === K) {
    const bestClasses = new Array<string>(K);
    for (let y = 0; y < K; y++) bestClasses[order[y]] = classes[y];
    const list = bestClasses.join(',');
    const fix =
      K <= 30 && list.length <= 400
        ? `: pass --classes ${/[\s"'\\$`]/.test(list) ? JSON.stringify(list) : list}`
        : ' (bestClasses in the JSON)';
    return { code: 'CLASS_ORDER', accuracy, bestAccuracy, bestClasses, labelToClass: order, message: `${head}${fix}` };
  }
  const moved = order.map((c, y) => [y, c]).filter(([y, c]) => y !== c);
  const shown =
    moved
      .slice(0, 6)
      .map(([y, c]) => `label ${y} → class ${c}`)
      .join(', ') + (moved.length > 6 ? ', …' : '');
  return {
    code: 'CLASS_ORDER',
    accuracy,
    bestAccuracy,
    bestClasses: null,
    labelToClass: order,
    message: `${head} (${shown}): the labels seem encoded differently from the model's classes; check the label column and the encoding`,
  };
}

/** Why scores come out non-finite, as far as we know. */
const OVERFLOW =
  'the solves or the leave-one-out steps overflowed, which happens when the model is far from an optimum of its training loss on these labels (see the other warnings) or the damping is very small';

/** NON_FINITE for the per-row scores that are not all finite numbers, or null. */
export function nonFiniteWarning(
  scores: Record<string, ArrayLike<number> | null>,
  cause = OVERFLOW,
): NonFiniteWarning | null {
  const found: NonFiniteWarning['scores'] = {};
  for (const [name, a] of Object.entries(scores)) {
    if (!a) continue;
    let count = 0;
    const rows: number[] = [];
    for (let i = 0; i < a.length; i++) {
      if (Number.isFinite(a[i])) continue;
      count++;
      if (rows.length < 10) rows.push(i);
    }
    if (count) found[name] = { count, rows };
  }
  const names = Object.keys(found);
  if (names.length === 0) return null;
  const what = names
    .map(
      (k) =>
        `${k} of ${found[k].count} row${found[k].count === 1 ? '' : 's'} (${found[k].rows.join(', ')}${found[k].count > found[k].rows.length ? ', …' : ''})`,
    )
    .join('; ');
  return {
    code: 'NON_FINITE',
    scores: found,
    message: `not finite: ${what}; ${cause}. They are null in the JSON and n/a in the table`,
  };
}
