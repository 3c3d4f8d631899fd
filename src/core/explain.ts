/** `explain`: the influence of every training row on one test prediction (orchestration only). */
import { InfluenceError, throwIfAborted, type Progress } from './errors';
import type { RowsCache } from './cache/store';
import { resolveDamping, type SelfInfluenceMethod, type SolverKind } from './curvature/policy';
import type { TableOptions } from './data/table';
import { Engine } from './model/engine';
import type { OutputKind } from './model/head';
import { evaluate, refitHead, refitWithout } from './refit';
import { readTrainingRows, type CacheUse, type TrainingRows } from './rows';
import { explainScores, type ExplainScores } from './scores/explain';
import { topRows } from './scores/ranking';
import { headTheta, inputOf } from './task/head';
import { taskFor } from './task/loss';

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
  cache?: RowsCache | null;
  signal?: AbortSignal;
  onProgress?: Progress;
}

/** The test row as explained: where it is, its label and prediction, and its features. */
export interface ExplainTest {
  path: string;
  row: number;
  line: number;
  label: number;
  /** False when the test file has no label column: the prediction is explained for its predicted class. */
  labelled: boolean;
  predicted: number;
  probabilities: number[];
  loss: number;
  margin: number;
  runnerUp: number;
  features: number[];
  /** The feature columns of the test file, in model order. */
  featureNames: string[];
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
  test: ExplainTest;
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
    const rows = await readTrainingRows(eng, req.train, table, run, req);
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
    const scores = await explainScores(rows, { x: inputOf(test.h, rows.bias), g: test.g, z: test.z, label: test.label }, { damping, solver: req.solver, selfInfluence: req.selfInfluence, store: rows.store, explicitHessian: rows.explicitHessian, signal: req.signal, onProgress: req.onProgress });
    Object.assign(seconds, scores.seconds);
    t = performance.now();
    const task = taskFor(rows.C);
    const predicted = new Int32Array(rows.n);
    for (let i = 0; i < rows.n; i++) predicted[i] = task.prediction(rows.z.subarray(i * rows.C, (i + 1) * rows.C)).predicted;
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
        probabilities: task.probabilities(test.z),
        loss: test.loss,
        margin: scores.margin,
        runnerUp: scores.runnerUp,
        features: Array.from(test.features),
        featureNames: test.table.featureNames,
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

function verifyRows(
  rows: TrainingRows,
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
