/** `explain`: the influence of every training row on one test prediction. */
import { InfluenceError, throwIfAborted, type Progress } from './errors';
import type { FeatureCache } from './cache';
import { Engine, type CacheUse, type ForwardRows } from './forward';
import { select } from './linalg';
import { evaluate, headTheta, refitHead, refitWithout } from './refit';
import { explainScores, resolveDamping, type ExplainScores, type SelfInfluenceMethod, type SolverKind } from './influence';
import type { OutputKind } from './onnx';
import type { ExplainView } from '../protocol/webview';
import type { TableOptions } from './table';

export interface ExplainRequest {
  model: string;
  train: string;
  test: string;
  testRow: number;
  table?: Pick<TableOptions, 'labelColumn' | 'features' | 'classes'>;
  damping?: number | 'auto';
  solver?: SolverKind;
  selfInfluence?: SelfInfluenceMethod;
  batchSize?: number;
  /** Refit without each of the top K helpful and top K harmful rows and report the actual change. */
  verifyTop?: number;
  cache?: FeatureCache | null;
  signal?: AbortSignal;
  onProgress?: Progress;
}

export interface ExplainResult {
  version: 1;
  model: { path: string; sha256: string; layer: string; parameters: number; output: OutputKind };
  classes: string[] | null;
  damping: number;
  dampingRule: string;
  solver: SolverKind;
  selfInfluenceMethod: SelfInfluenceMethod;
  cgIterations: number | null;
  train: { path: string; rows: number; cache: CacheUse };
  /** The test row as the panel shows it, less the feature names (the extension adds them). */
  test: Omit<ExplainView['test'], 'featureNames'>;
  /** Per training row, in file order. */
  rows: { line: Int32Array; label: Int32Array; predicted: Int32Array; loss: Float64Array; offsets: Float64Array };
  scores: ExplainScores;
  verified: Verified | null;
  seconds: Record<string, number>;
}

/** Actual leave-one-out refits (exact, ‖∇J‖ ≤ 1e-10) beside the estimates, for the listed rows. */
export interface Verified {
  /** ‖∇J‖ of the full-data refit that the changes are measured from. */
  gradNorm: number;
  testLossAtOptimum: number;
  rows: { row: number; lossChangeIfRemoved: number; lossChangeIfRemovedNewton: number; actualLossChangeIfRemoved: number }[];
}

export function softmax(z: ArrayLike<number>): number[] {
  let m = -Infinity;
  for (let c = 0; c < z.length; c++) m = Math.max(m, z[c]);
  const e = Array.from(z, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

export async function explain(req: ExplainRequest, engine?: Engine): Promise<ExplainResult> {
  const t0 = performance.now();
  const seconds: Record<string, number> = {};
  let t = t0;
  const lap = (name: string) => {
    const now = performance.now();
    seconds[name] = (now - t) / 1000;
    t = now;
  };
  if (!Number.isInteger(req.testRow) || req.testRow < 0) {
    throw new InfluenceError('BAD_OPTION', `--test-row must be a 0-based row number; got ${req.testRow}`);
  }
  const own = !engine;
  const eng = engine ?? (await Engine.open(req.model));
  try {
    lap('load');
    const run = { signal: req.signal, onProgress: req.onProgress, batchSize: req.batchSize, cache: req.cache };
    const table = req.table ?? {};
    // The test row first: a bad test file fails fast, before the long pass over the training data.
    const test = await eng.forwardRow(req.test, req.testRow, table, run);
    lap('forwardTest');
    const rows = await eng.forwardTrain(req.train, table, run, req);
    lap('forwardTrain');
    if (rows.explicitHessian) {
      seconds.forwardTrain -= rows.hessianSeconds;
      seconds.hessianWait = rows.hessianSeconds;
    }
    if (rows.n === 0) {
      throw new InfluenceError('NO_ROWS', `the training file has a header but no data rows`, { file: req.train });
    }
    throwIfAborted(req.signal);
    const { damping, rule } = resolveDamping(req.damping, rows, eng.info.l2);
    const x = new Float64Array(rows.D + (rows.bias ? 1 : 0));
    x.set(test.h);
    if (rows.bias) x[rows.D] = 1;
    const scores = await explainScores(rows, { x, g: test.g, z: test.z, label: test.label }, { damping, solver: req.solver, selfInfluence: req.selfInfluence, store: rows.store, explicitHessian: rows.explicitHessian, signal: req.signal, onProgress: req.onProgress });
    Object.assign(seconds, scores.seconds);
    t = performance.now();
    const predicted = new Int32Array(rows.n);
    for (let i = 0; i < rows.n; i++) {
      let best = 0;
      for (let c = 1; c < rows.C; c++) if (rows.z[i * rows.C + c] > rows.z[i * rows.C + best]) best = c;
      predicted[i] = best;
    }
    let verified: Verified | null = null;
    if (req.verifyTop) {
      const tv = performance.now();
      verified = verifyRows(rows, damping, eng, test, topRows(scores.lossChangeIfRemoved, req.verifyTop), scores, req.signal);
      seconds.verify = (performance.now() - tv) / 1000;
    }
    await rows.written();
    seconds.total = (performance.now() - t0) / 1000;
    const info = eng.info;
    return {
      version: 1,
      model: { path: req.model, sha256: info.sha256, layer: info.head.node, parameters: info.parameters, output: info.output },
      classes: table.classes ?? info.classes,
      damping,
      dampingRule: rule,
      solver: scores.solver,
      selfInfluenceMethod: scores.selfInfluenceMethod,
      cgIterations: scores.cgIterations,
      train: { path: req.train, rows: rows.n, cache: rows.cache },
      test: {
        path: req.test,
        row: req.testRow,
        line: test.line,
        label: test.label,
        labelled: test.labelled,
        predicted: scores.predicted,
        probabilities: softmax(test.z),
        loss: test.loss,
        margin: scores.margin,
        runnerUp: scores.runnerUp,
        features: Array.from(test.features),
      },
      rows: { line: rows.lines, label: rows.labels, predicted, loss: rows.loss, offsets: rows.offsets },
      scores,
      verified,
      seconds,
    };
  } finally {
    if (own) await eng.release();
  }
}

/** Indices of the `top` rows with the largest positive and the most negative values of `v` (ties: lower row first). */
export function topRows(v: Float64Array, top: number): { helpful: number[]; harmful: number[] } {
  return { helpful: largest(v, top, 1), harmful: largest(v, top, -1) };
}

/** The `top` indices with the largest sign·v > 0, in order, by selection rather than a sort of all n. */
function largest(v: Float64Array, top: number, sign: 1 | -1): number[] {
  if (!(top > 0)) return [];
  let count = 0;
  for (let i = 0; i < v.length; i++) if (sign * v[i] > 0) count++;
  let threshold = 0;
  if (count > top) {
    const vals = new Float64Array(count);
    for (let i = 0, k = 0; i < v.length; i++) if (sign * v[i] > 0) vals[k++] = sign * v[i];
    threshold = select(vals, count - top);
  }
  const idx: number[] = [];
  for (let i = 0; i < v.length; i++) if (sign * v[i] > 0 && sign * v[i] >= threshold) idx.push(i);
  return idx.sort((a, b) => sign * (v[b] - v[a]) || a - b).slice(0, top);
}

function verifyRows(
  rows: ForwardRows,
  damping: number,
  eng: Engine,
  test: { h: Float32Array; label: number },
  ranked: { helpful: number[]; harmful: number[] },
  scores: ExplainScores,
  signal?: AbortSignal,
): Verified {
  const { W, b, C, D } = eng.info.head;
  const full = refitHead(rows, damping, headTheta(W, b, C, D), { signal });
  const testRows = { n: 1, C, D, bias: b !== null, h: test.h, labels: Int32Array.of(test.label) };
  const base = evaluate(testRows, full.theta).meanLoss;
  const list = [...ranked.helpful, ...ranked.harmful];
  return {
    gradNorm: full.gradNorm,
    testLossAtOptimum: base,
    rows: list.map((i) => ({
      row: i,
      lossChangeIfRemoved: scores.lossChangeIfRemoved[i],
      lossChangeIfRemovedNewton: scores.lossChangeIfRemovedNewton[i],
      actualLossChangeIfRemoved: evaluate(testRows, refitWithout(rows, damping, full.theta, [i], { signal }).theta).meanLoss - base,
    })),
  };
}
