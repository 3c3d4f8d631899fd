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
import { EXACT_GGN_MAX_P, ExactGgn, type DeepCurvature, type DeepCurvatureMethod } from './curvature/ggn';
import type { DampingOption } from './curvature/policy';
import { LayerEkfac } from './curvature/layerEkfac';
import { mergeNotes, tableRead, type ChooseOptions, type TableRequest } from './data/choose';
import type { SourceChoice } from './data/chooseSource';
import type { SourceKind } from './data/source';
import type { TableOptions } from './data/table';
import { readDeepRows, rowPass, type DeepRows, type RowPass, type RunControl } from './deepRows';
import type { ExplainRequest, ExplainResult } from './explainShapes';
import { prepareHead, type PreparedHead } from './headfit';
import { DeepEngine } from './model/deep';
import { modelSummary } from './model/summary';
import type { Engine } from './model/engine';
import { describeLayers, layerSummaries } from './model/layers';
import { deepExplainScores, deepTestPoint, type DeepTestPoint } from './scores/deep';
import { topRows } from './scores/ranking';
import { STABILITY_FACTOR, summarise, type Stability } from './scores/stability';
import { STATIONARITY_WARN } from './task/fit';
import { taskFor } from './task/loss';

/** The scores that need the head's closed form, reported as null beyond the head. */
export const HEAD_ONLY = ['lossChangeIfRemovedNewton', 'verified'] as const;

const SOURCE_WORDS: Record<SourceKind, string> = {
  table: 'a table',
  imagefolder: 'an image folder',
  image: 'an image',
  manifest: 'an image manifest',
  columns: 'a Parquet/Arrow file',
};

/** A text table's choice; the other sources are read for the head only so far. */
async function tableOnly(eng: Engine, path: string, table: TableRequest, choose: ChooseOptions): Promise<SourceChoice> {
  const c = await eng.chooseSource(path, table, choose);
  if (c.kind !== 'table') {
    throw new InfluenceError(
      'BAD_OPTION',
      `--layers beyond the head reads CSV/TSV/JSONL tables for now; ${path} is ${SOURCE_WORDS[c.kind]}: use --layers head, or export the features to a table`,
      { file: path },
    );
  }
  return c;
}

/** The curvature asked for, else the exact GGN where it fits: per-layer EK-FAC agrees with it only loosely on trained models (Pearson 0.4–0.8 on the LDS fixtures; README). */
export function deepMethod(P: number, asked?: DeepCurvatureMethod): DeepCurvatureMethod {
  return asked ?? (P <= EXACT_GGN_MAX_P ? 'exact' : 'ekfac');
}

/** What the deep path builds before its scores. The caller releases `curv`. */
export interface DeepRun {
  test: DeepTestPoint;
  rows: DeepRows;
  /** The damping and the head report, read on the head. */
  prep: PreparedHead<DeepRows>;
  curv: DeepCurvature;
  /** The training rows again, for the scores. */
  pass: RowPass;
}

/**
 * The deep path up to the scores: the test point (the test row's features, explained for its label,
 * or for the predicted class when it has none), the pass over the training rows with the
 * curvature's statistics, the damping read on the head (its L2 is the weight decay of every layer;
 * λ is on θ here), and the curvature by `method`.
 */
export async function deepRun(
  eng: Engine,
  deep: DeepEngine,
  method: DeepCurvatureMethod,
  a: {
    train: string;
    options: TableOptions;
    test: { features: Float32Array | Float64Array; labelled: boolean; label: number };
    damping?: DampingOption;
    run: RunControl;
    lap?: (stage: string) => void;
  },
): Promise<DeepRun> {
  const { run } = a;
  const fwt = await deep.forward(a.test.features, 1);
  const task = taskFor(deep.K);
  const test = await deepTestPoint(deep, fwt, 0, a.test.labelled ? a.test.label : task.prediction(fwt.z).predicted);
  a.lap?.('forwardTest');
  const ekfac = method === 'ekfac' ? LayerEkfac.collector(deep) : null;
  const rows = await readDeepRows(deep, a.train, a.options, run, { ggn: method === 'exact', onBatch: ekfac?.onBatch });
  if (rows.n === 0)
    throw new InfluenceError('NO_ROWS', `the training file has a header but no data rows`, { file: a.train });
  a.lap?.('forwardTrain');
  throwIfAborted(run.signal);
  const prep = await prepareHead(eng, rows, {
    damping: a.damping,
    head: 'shipped',
    signal: run.signal,
    onProgress: run.onProgress,
  });
  const { damping } = prep.damping;
  a.lap?.('head');
  const curv =
    method === 'exact'
      ? await ExactGgn.create(rows.H0!, deep.P, damping, run.signal)
      : await ekfac!.finish(rows, damping, (fn) => deep.pass(a.train, a.options, run, fn), run.signal);
  a.lap?.('curvature');
  return { test, rows, prep, curv, pass: rowPass(deep, rows, a.train, a.options, run) };
}

export async function explainDeep(req: ExplainRequest, eng: Engine): Promise<ExplainResult> {
  const t0 = performance.now();
  const seconds: Record<string, number> = {};
  let t = t0;
  const lap = (name: string) => {
    const now = performance.now();
    seconds[name] = (now - t) / 1000;
    t = now;
  };
  if (req.head === 'refit')
    throw new InfluenceError(
      'BAD_OPTION',
      '--head refit refits the head alone; it cannot be combined with --layers beyond the head',
    );
  const deep = await DeepEngine.open(eng, req.layers!);
  try {
    const method = deepMethod(deep.P, req.curvature);
    const what = `the chosen layers (${describeLayers(deep.chosen)})`;
    if (method === 'exact') ExactGgn.check(deep.P, what);
    lap('load');
    const run = { signal: req.signal, onProgress: req.onProgress, batchSize: req.batchSize };
    const table = req.table ?? {};
    const trainTable = await tableOnly(eng, req.train, table, { signal: req.signal });
    const testTable = await tableOnly(eng, req.test, table, {
      like: trainTable,
      requireLabel: table.labelColumn !== undefined,
      signal: req.signal,
    });
    lap('chooseTables');
    const testRow = await eng.forwardRow(req.test, req.testRow, testTable.options, run);
    const {
      test: point,
      rows,
      prep,
      curv,
      pass,
    } = await deepRun(eng, deep, method, {
      train: req.train,
      options: trainTable.options,
      test: testRow,
      damping: req.damping,
      run,
      lap,
    });
    const task = taskFor(deep.K);
    const K = deep.K;
    const { damping, rule } = prep.damping;
    const label = point.label;
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
        pass,
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
    seconds.total = (performance.now() - t0) / 1000;
    return {
      version: 1,
      model: modelSummary(eng, req.model),
      layers: layerSummaries(deep.chosen),
      curvature: method,
      headOnly: [...HEAD_ONLY],
      classes,
      labelColumn: rows.table.labelColumn,
      damping,
      dampingRule: rule === '--damping' ? rule : `${rule}; read on the head, applied to every chosen layer`,
      impliedL2: prep.damping.implied,
      // The head's stationarity, without the hint to --head refit (which refits the head alone).
      head: {
        ...prep.head,
        message: prep.head.warning
          ? `this head is not at the optimum that influence assumes (relative gradient norm ${prep.head.relGradNorm.toPrecision(2)} > ${STATIONARITY_WARN}); the estimates describe a refit model`
          : null,
      },
      stability,
      solver: method === 'exact' ? 'cholesky' : 'ekfac',
      selfInfluenceMethod: scores.selfInfluenceMethod,
      cgIterations: null,
      train: { path: req.train, rows: rows.n, cache: 'off' },
      notes: mergeNotes(eng.notes, trainTable.notes, testTable.notes, notes),
      warnings,
      tables: { train: tableRead(trainTable), test: tableRead(testTable) },
      test: {
        path: req.test,
        row: req.testRow,
        line: testRow.line,
        label,
        labelled: testRow.labelled,
        predicted: scores.predicted,
        probabilities: task.probabilities(point.z),
        loss: task.lossAndSignal(point.z, 0, label, null, 0),
        margin: scores.margin,
        runnerUp: scores.runnerUp,
        features: Array.from(testRow.features),
        featureNames: testRow.table.featureNames,
      },
      rows: { line: rows.lines, label: rows.labels, predicted, loss: rows.loss, offsets: rows.offsets },
      scores,
      verified: null,
      agreement: null,
      seconds,
    };
  } finally {
    await deep.release();
  }
}
