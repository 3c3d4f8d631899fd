/**
 * `explain --layers K|all|names` (orchestration only): influence over the last layers rather than
 * the head alone. The rows come from one pass through the user's graph and our backward graph
 * (deepRows.ts), the curvature is the exact damped GGN over the chosen parameters (`--curvature
 * exact`) or EK-FAC per layer, and the scores are scores/deep.ts's. The damping rules and the head
 * report are the head's (its L2 is the weight decay the whole model was trained with); the
 * leverage-corrected Newton estimate and `--verify-top` refit the head in closed form and are
 * reported as null, listed in `headOnly`.
 */
import { InfluenceError, throwIfAborted } from './errors';
import { classOrderWarning, nonFiniteWarning, type Warning } from './checks';
import { mergeNotes, tableRead } from './data/choose';
import { deepHead, openDeep, trainDeep } from './deepRun';
import { readExplainInputs, rowsResult, stageTimer, testResult } from './explainInputs';
import type { ExplainRequest, ExplainResult } from './explainShapes';
import { prepareHead } from './headfit';
import { modelSummary } from './model/summary';
import type { DeepCurvatureMethod } from './curvature/ggn';
import type { DeepEngine } from './model/deep';
import type { Engine } from './model/engine';
import { describeLayers, layerSummaries } from './model/layers';
import { deepExplainScores, deepLossChanges, deepTestPoint } from './scores/deep';
import {
  collectRowFactors,
  factorBytes,
  factorLossChanges,
  FACTOR_BYTES,
  packRowFactors,
  unpackRowFactors,
} from './scores/rowFactors';
import { topRows } from './scores/ranking';
import { STABILITY_FACTOR, summarise, type Stability } from './scores/stability';
import { taskFor } from './task/loss';

/** The cache entry of the rows' loss-gradient factors. */
const ROW_FACTORS = 'rowfactors';

/** What the agreement's deeper side keeps in memory at once, the rows' factors and the training pass's batches (the peak at 200k rows of the bench stays near 1.2 GB). */
const SIDE_BYTES = 768 * 1024 * 1024;

/** The scores that need the head's closed form, reported as null beyond the head. */
export const HEAD_ONLY = ['lossChangeIfRemovedNewton', 'verified'] as const;

/** The inputs of an explain beyond the head, its test point and its training side; the caller releases `deep`. */
async function openExplainDeep(
  req: ExplainRequest,
  eng: Engine,
  deep: DeepEngine,
  method: DeepCurvatureMethod,
  lap: (name: string) => void,
  memoBytes?: (rows: number) => number,
) {
  const { run, trainTable, testTable, test } = await readExplainInputs(req, eng, lap);
  const task = taskFor(deep.K);
  // The test row, explained for its label, or for the predicted class when it has none.
  const fwt = await deep.forward(test.features, 1);
  const point = await deepTestPoint(deep, fwt, 0, test.labelled ? test.label : task.prediction(fwt.z).predicted);
  lap('forwardTest');
  const training = await trainDeep(deep, method, req.train, trainTable.options, run, memoBytes);
  if (training.rows.n === 0)
    throw new InfluenceError('NO_ROWS', `the training file has a header but no data rows`, { file: req.train });
  lap('forwardTrain');
  return { trainTable, testTable, test, task, point, training };
}

export async function explainDeep(req: ExplainRequest, eng: Engine): Promise<ExplainResult> {
  const t0 = performance.now();
  const { seconds, lap } = stageTimer(t0);
  const { deep, method } = await openDeep(eng, { layers: req.layers!, curvature: req.curvature, head: req.head });
  try {
    lap('load');
    const { trainTable, testTable, test, task, point, training } = await openExplainDeep(req, eng, deep, method, lap);
    const K = deep.K;
    const label = point.label;
    const rows = training.rows;
    throwIfAborted(req.signal);
    // The damping rules read the head (its L2 is the weight decay of every layer); λ is on θ here.
    const prep = await prepareHead(eng, rows, {
      damping: req.damping,
      head: 'shipped',
      signal: req.signal,
      onProgress: req.onProgress,
    });
    const { damping } = prep.damping;
    lap('head');
    const curv = await training.curvature(damping, req.signal);
    lap('curvature');
    let stability: Stability | null = null;
    let scores;
    try {
      // The stability check's λ/10 and 10λ ride on the same pass over the rows.
      const check = req.stability !== false;
      const r = await deepExplainScores(
        deep,
        rows.n,
        task,
        point,
        curv,
        training.pass,
        check ? [damping / STABILITY_FACTOR, damping * STABILITY_FACTOR] : [],
        req.signal,
      );
      scores = r.scores;
      lap('scores');
      if (check) {
        const k = req.stabilityTop ?? 10;
        const [low, high] = r.also.map((v) => topRows(v, k));
        const mid = topRows(scores.lossChangeIfRemoved, k);
        stability = summarise(k, damping, {
          helpful: [low.helpful, mid.helpful, high.helpful],
          harmful: [low.harmful, mid.harmful, high.harmful],
        });
      }
    } finally {
      await curv.release();
    }
    const predicted = new Int32Array(rows.n);
    for (let i = 0; i < rows.n; i++) predicted[i] = task.prediction(rows.z.subarray(i * K, (i + 1) * K)).predicted;
    const classes = trainTable.options.classes ?? null;
    const warnings: Warning[] = [];
    const order = classOrderWarning(rows, task, classes, trainTable.classesFrom);
    if (order) warnings.push(order);
    const { influence, lossChangeIfRemoved, selfInfluence, relativeInfluence, classificationInfluence } = scores;
    const nonFinite = nonFiniteWarning({
      influence,
      lossChangeIfRemoved,
      selfInfluence,
      relativeInfluence,
      classificationInfluence,
    });
    if (nonFinite) warnings.push(nonFinite);
    const notes = [
      `influence over the last layers: ${describeLayers(deep.chosen)}; ${deep.P} parameters; curvature: ${method === 'exact' ? 'the exact damped Gauss–Newton matrix' : 'EK-FAC per layer (block-diagonal across layers)'}`,
      `head-only, so null here (listed in headOnly), as they rest on the head's closed-form refit: the leverage-corrected Newton estimate (lossChangeIfRemovedNewton)${req.verifyTop ? ' and the refits of --verify-top' : ''}`,
    ];
    await training.written();
    seconds.total = (performance.now() - t0) / 1000;
    return {
      version: 1,
      model: modelSummary(eng, req.model),
      layers: layerSummaries(deep.chosen),
      curvature: method,
      headOnly: [...HEAD_ONLY],
      classes,
      labelColumn: trainTable.kind === 'imagefolder' ? null : rows.table.labelColumn,
      ...deepHead(prep),
      stability,
      solver: method === 'exact' ? 'cholesky' : 'ekfac',
      selfInfluenceMethod: scores.selfInfluenceMethod,
      cgIterations: null,
      train: { path: req.train, rows: rows.n, cache: training.cache },
      notes: mergeNotes(eng.notes, trainTable.notes, testTable.notes, 'notes' in test ? test.notes : [], notes),
      warnings,
      tables: { train: tableRead(trainTable), test: tableRead(testTable) },
      test: testResult(
        req,
        test,
        label,
        scores,
        task.probabilities(point.z),
        task.lossAndSignal(point.z, 0, label, null, 0),
      ),
      rows: rowsResult(rows, predicted, rows.loss),
      scores,
      verified: null,
      agreement: null,
      seconds,
    };
  } finally {
    await deep.release();
  }
}

/** The deeper side of explain's head-vs-last-2 agreement: lossChangeIfRemoved alone. */
export interface DeepSide {
  layers: ExplainResult['layers'];
  curvature: ExplainResult['curvature'];
  solver: ExplainResult['solver'];
  scores: { lossChangeIfRemoved: Float64Array };
}

/**
 * The deeper side of the agreement at λ = req.damping (the head's): from the rows' loss-gradient
 * factors (scores/rowFactors.ts) when they fit FACTOR_BYTES. The cache keeps them, so that with it
 * warm the comparison is one solve and one GEMM over the rows; otherwise one pass over the rows
 * (a replay of the training pass's batches on a cold run) gathers them. Past the budget, one
 * scoring pass instead.
 */
export async function explainDeepSide(req: ExplainRequest, eng: Engine, damping: number): Promise<DeepSide> {
  const { deep, method } = await openDeep(eng, { layers: req.layers!, curvature: req.curvature });
  try {
    // The training pass's forward batches are kept only with what the factors leave of SIDE_BYTES.
    const fits = (rows: number) => factorBytes(deep, rows) <= FACTOR_BYTES;
    const memoBytes = (rows: number) => SIDE_BYTES - (fits(rows) ? factorBytes(deep, rows) : 0);
    const { point, training } = await openExplainDeep(req, eng, deep, method, () => undefined, memoBytes);
    const { n } = training.rows;
    const curv = await training.curvature(damping, req.signal);
    try {
      let lossChangeIfRemoved: Float64Array;
      if (fits(n)) {
        const cached = await training.loadDerived(ROW_FACTORS);
        let factors = cached && unpackRowFactors(deep, n, cached);
        if (!factors) {
          factors = await collectRowFactors(deep, n, training.lastPass, req.signal);
          training.storeDerived(ROW_FACTORS, packRowFactors(factors));
        }
        const gt = new Float64Array(deep.P);
        for (let a = 0; a < deep.K; a++) for (let q = 0; q < deep.P; q++) gt[q] += point.g[a] * point.J[a * deep.P + q];
        lossChangeIfRemoved = await factorLossChanges(deep, factors, await curv.solve(gt), n, req.signal);
      } else {
        [lossChangeIfRemoved] = await deepLossChanges(deep, n, point, curv, training.lastPass, [damping], req.signal);
      }
      await training.written();
      return {
        layers: layerSummaries(deep.chosen),
        curvature: method,
        solver: method === 'exact' ? 'cholesky' : 'ekfac',
        scores: { lossChangeIfRemoved },
      };
    } finally {
      await curv.release();
    }
  } finally {
    await deep.release();
  }
}
