/** `explain`: the influence of every training row on one test prediction (orchestration only). */
import { InfluenceError, throwIfAborted } from './errors';
import { classOrderWarning, nonFiniteWarning, type Warning } from './checks';
import { Curvature } from './curvature/curvature';
import { mergeNotes, tableRead } from './data/choose';
import { prepareHead } from './headfit';
import { Engine } from './model/engine';
import { modelLayers, modelSummary } from './model/summary';
import { evaluate, refitHead, refitWithCurvature, refitWithout, rowsAt } from './refit';
import { readTrainingRows, rowsForHead, type TrainingRows } from './rows';
import { explainScores, type ExplainScores, type TestPoint } from './scores/explain';
import { explainStability, type Stability } from './scores/stability';
import { topRows } from './scores/ranking';
import { headTheta, inputOf, logits, type HeadShape } from './task/head';
import { taskFor, type Task } from './task/loss';
import { headCurvature } from './headCurvature';
import { explainDeep, explainDeepSide, type DeepSide } from './explainDeep';
import { readExplainInputs, rowsResult, stageTimer, testResult } from './explainInputs';
import type { ExplainRequest, ExplainResult, Verified } from './explainShapes';
import { isHeadOnly, layerSummaries } from './model/layers';
import { compareRankings } from './scores/agreement';

export async function explain(req: ExplainRequest, engine?: Engine): Promise<ExplainResult> {
  if (!Number.isInteger(req.testRow) || req.testRow < 0) {
    throw new InfluenceError('BAD_OPTION', `--test-row must be a 0-based row number; got ${req.testRow}`);
  }
  const own = !engine;
  const eng = engine ?? (await Engine.open(req.model, { output: req.output }));
  try {
    const result = isHeadOnly(req.layers) ? await explainHead(req, eng) : await explainDeep(req, eng);
    if (req.agreement !== false) await addAgreement(req, eng, result);
    return result;
  } finally {
    if (own) await eng.release();
  }
}

/**
 * "Is the head enough here?": when the model has more than one layer, the same explanation on the
 * other side (the last 2 layers for a head result, the head for a deeper one) at the same λ, its
 * lossChangeIfRemoved compared with the result's. A comparison that cannot run (an op the deeper
 * path does not take) is a note, never a failed explain; so is one skipped by default.
 */
async function addAgreement(req: ExplainRequest, eng: Engine, result: ExplainResult): Promise<void> {
  if (result.model.layers < 2) return;
  // On an image folder, manifest or Parquet/Arrow, a cold comparison decodes every image again
  // (seconds), so it is asked for; the cache then makes the next ones a solve each.
  if (req.agreement === undefined && isHeadOnly(req.layers) && result.rows.locator) {
    result.notes.push(
      'no head-vs-last-2 comparison by default on an image folder, manifest or Parquet/Arrow source: the first one reads every row again (--agreement runs it; with the rows cache warm it costs one solve)',
    );
    return;
  }
  const t0 = performance.now();
  const headFirst = isHeadOnly(req.layers);
  if (headFirst && result.head.mode === 'refit') {
    result.notes.push('no head-vs-last-2 comparison with --head refit: the deeper layers are scored as shipped');
    return;
  }
  const other: ExplainRequest = {
    ...req,
    layers: headFirst ? 2 : 'head',
    curvature: undefined,
    damping: result.damping,
    head: undefined,
    stability: false,
    verifyTop: undefined,
    onProgress: req.onProgress && ((stage, done, total) => req.onProgress!(`agreement ${stage}`, done, total)),
  };
  let o: ExplainResult | DeepSide;
  try {
    o = headFirst ? await explainDeepSide(other, eng, result.damping) : await explainHead(other, eng);
  } catch (e) {
    if (!(e instanceof InfluenceError)) throw e;
    result.notes.push(`no head-vs-last-2 comparison: ${e.message}`);
    return;
  }
  const [head, deeper] = headFirst ? [result, o] : [o, result];
  result.agreement = {
    ...compareRankings(head.scores.lossChangeIfRemoved, deeper.scores.lossChangeIfRemoved),
    damping: result.damping,
    head: { layers: head.layers, curvature: head.curvature, solver: head.solver },
    deeper: { layers: deeper.layers, curvature: deeper.curvature, solver: deeper.solver },
  };
  result.seconds.agreement = (performance.now() - t0) / 1000;
  result.seconds.total += result.seconds.agreement;
}

/** explain over the head's parameters. */
async function explainHead(req: ExplainRequest, eng: Engine): Promise<ExplainResult> {
  const t0 = performance.now();
  const { seconds, lap, restart } = stageTimer(t0);
  const methods = headCurvature(req, eng);
  lap('load');
  const { run, trainTable, testTable, test } = await readExplainInputs(req, eng, lap);
  lap('forwardTest');
  const rows = await readTrainingRows(eng, req.train, trainTable.options, run, methods);
  lap('forwardTrain');
  if (rows.explicitHessian) {
    seconds.forwardTrain -= rows.hessianSeconds;
    seconds.hessianWait = rows.hessianSeconds;
  }
  if (rows.n === 0) {
    throw new InfluenceError('NO_ROWS', `the training file has a header but no data rows`, { file: req.train });
  }
  throwIfAborted(req.signal);
  const prep = await prepareHead(eng, rows, {
    damping: req.damping,
    head: req.head,
    signal: req.signal,
    onProgress: req.onProgress,
  });
  const { damping, effective, rule } = prep.damping;
  const train = rowsForHead(prep, rows);
  lap('head');
  const task = taskFor(rows.C);
  const point = testPoint(task, test, prep.theta, rows);
  const opts = {
    damping: effective,
    solver: methods.solver,
    selfInfluence: methods.selfInfluence,
    store: train.store,
    explicitHessian: train.explicitHessian,
    signal: req.signal,
    onProgress: req.onProgress,
  };
  const curv = await Curvature.create(train, effective, opts);
  let scores: ExplainScores;
  let stability: Stability | null = null;
  let verified: Verified | null = null;
  try {
    scores = await explainScores(train, point, opts, curv);
    Object.assign(seconds, scores.seconds);
    restart();
    if (req.stability !== false) {
      stability = await explainStability(
        train,
        point,
        opts,
        curv,
        scores.lossChangeIfRemoved,
        req.stabilityTop ?? 10,
        damping,
      );
      lap('stability');
    }
    if (req.verifyTop) {
      verified = await verifyRows(
        train,
        effective,
        eng,
        { h: test.h, label: point.label },
        topRows(scores.lossChangeIfRemoved, req.verifyTop),
        scores,
        curv,
        req.signal,
      );
      lap('verify');
    }
  } finally {
    await curv.release();
  }
  const predicted = new Int32Array(rows.n);
  for (let i = 0; i < rows.n; i++)
    predicted[i] = task.prediction(train.z.subarray(i * rows.C, (i + 1) * rows.C)).predicted;
  const classes = trainTable.options.classes ?? null;
  const warnings: Warning[] = [];
  const order = classOrderWarning(rows, task, classes, trainTable.classesFrom);
  if (order) warnings.push(order);
  const {
    influence,
    lossChangeIfRemoved,
    lossChangeIfRemovedNewton,
    selfInfluence,
    relativeInfluence,
    classificationInfluence,
  } = scores;
  const nonFinite = nonFiniteWarning({
    influence,
    lossChangeIfRemoved,
    lossChangeIfRemovedNewton,
    selfInfluence,
    relativeInfluence,
    classificationInfluence,
  });
  if (nonFinite) warnings.push(nonFinite);
  await rows.written();
  seconds.total = (performance.now() - t0) / 1000;
  return {
    version: 1,
    model: modelSummary(eng, req.model),
    layers: layerSummaries(modelLayers(eng).slice(0, 1)),
    curvature: req.curvature ?? null,
    headOnly: [],
    classes,
    labelColumn: trainTable.kind === 'imagefolder' ? null : rows.table.labelColumn,
    damping,
    dampingRule: rule,
    impliedL2: prep.damping.implied,
    head: prep.head,
    stability,
    solver: scores.solver,
    selfInfluenceMethod: scores.selfInfluenceMethod,
    cgIterations: scores.cgIterations,
    train: {
      path: req.train,
      rows: rows.n,
      cache: rows.cache,
      ...(rows.source ? { kind: rows.source.kind, read: rows.source.read } : {}),
    },
    notes: mergeNotes(
      eng.notes,
      trainTable.notes,
      testTable.notes,
      'notes' in test ? test.notes : [],
      rows.source?.notes ?? [],
    ),
    warnings,
    tables: { train: tableRead(trainTable), test: tableRead(testTable) },
    ...(rows.source?.preprocess
      ? { preprocess: rows.source.preprocess }
      : 'preprocess' in test && test.preprocess
        ? { preprocess: test.preprocess }
        : {}),
    test: testResult(req, test, point.label, scores, task.probabilities(point.z), point.loss),
    rows: rowsResult(rows, predicted, train.loss),
    scores,
    verified,
    agreement: null,
    seconds,
  };
}

/**
 * The test row at the scored head: its logits θ'x̃_t, the label explained (its own, or when the
 * test file has none, the predicted class), and the loss and g for that label.
 */
function testPoint(
  task: Task,
  test: { h: Float32Array; labelled: boolean; label: number },
  theta: Float64Array,
  shape: HeadShape,
): TestPoint & { loss: number } {
  const z = new Float64Array(shape.C);
  logits(shape, theta, test.h, 0, z);
  const label = test.labelled ? test.label : task.prediction(z).predicted;
  const g = new Float64Array(shape.C);
  const loss = task.lossAndSignal(z, 0, label, g, 0);
  return { x: inputOf(test.h, shape.bias), g, z, label, loss };
}

/**
 * Refits on the effective head (logits scale·z) at the effective damping: the same changes as
 * refitting θ at λ. Small problems refit in float64 JS (refitHead); the fast path's refit takes its
 * Newton directions from the curvature already built and its gradients from ORT passes.
 */
async function verifyRows(
  rows: TrainingRows,
  damping: number,
  eng: Engine,
  test: { h: Float32Array; label: number },
  ranked: { helpful: number[]; harmful: number[] },
  scores: ExplainScores,
  curv: Curvature,
  signal?: AbortSignal,
): Promise<Verified> {
  const { W, b, C, D, scale } = eng.info.head;
  const theta0 = headTheta(W, b, C, D, scale);
  const built: Curvature[] = [];
  try {
    let refit: (theta: Float64Array, remove: number[]) => Promise<{ theta: Float64Array; gradNorm: number }>;
    let full: { theta: Float64Array; gradNorm: number };
    if (curv.fast) {
      // The full refit rebuilds the curvature where the chord steps slow down; the leave-one-out refits
      // start at the optimum, where the last curvature built is the right one.
      const rebuild = async (theta: Float64Array) => {
        const c = await Curvature.create({ ...rows, ...rowsAt(rows, theta) }, damping, { path: 'fast', signal });
        built.push(c);
        return c;
      };
      const f = await refitWithCurvature(rows, damping, theta0, curv, { rebuild, signal });
      full = f;
      refit = (theta, remove) => refitWithCurvature(rows, damping, theta, f.curv, { remove, signal });
    } else {
      full = refitHead(rows, damping, theta0, { signal });
      refit = async (theta, remove) => refitWithout(rows, damping, theta, remove, { signal });
    }
    const testRows = { n: 1, C, D, bias: b !== null, h: test.h, labels: Int32Array.of(test.label) };
    const base = evaluate(testRows, full.theta).meanLoss;
    const out: Verified['rows'] = [];
    for (const i of [...ranked.helpful, ...ranked.harmful]) {
      out.push({
        row: i,
        lossChangeIfRemoved: scores.lossChangeIfRemoved[i],
        lossChangeIfRemovedNewton: scores.lossChangeIfRemovedNewton[i],
        actualLossChangeIfRemoved: evaluate(testRows, (await refit(full.theta, [i])).theta).meanLoss - base,
      });
    }
    return { gradNorm: full.gradNorm, testLossAtOptimum: base, rows: out };
  } finally {
    for (const c of built) await c.release();
  }
}
