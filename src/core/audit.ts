/** `audit`: memorized and suspicious training rows (orchestration only). */
import { InfluenceError, throwIfAborted, type Progress } from './errors';
import type { RowsCache } from './cache/store';
import { classOrderWarning, nonFiniteWarning, type Warning } from './checks';
import { Curvature } from './curvature/curvature';
import type { DampingOption, SelfInfluenceMethod, SolverKind } from './curvature/policy';
import { mergeNotes, tableRead, type TableRead, type TableRequest } from './data/choose';
import { prepareHead, type HeadMode, type HeadReport } from './headfit';
import { rowsAt } from './refit';
import { auditStability, type Stability } from './scores/stability';
import { Engine } from './model/engine';
import { readRows, readTrainingRows, type RunRows, type TrainingRows } from './rows';
import { auditScores, type AuditScores, type HeldOut } from './scores/audit';
import type { ImageRequest } from './sources';
import { taskFor } from './task/loss';

export interface AuditRequest {
  model: string;
  /** The graph output to explain (default: the logits behind the final linear layer). */
  output?: string;
  train: string;
  heldOut: { path: string; source: 'validation' | 'test' } | null;
  table?: TableRequest;
  /** Image sources: the image column and the preprocessing from settings or flags. */
  images?: ImageRequest;
  damping: DampingOption;
  /** Score the head as given (default) or refit to the optimum of the damped objective. */
  head?: HeadMode;
  /** Compare the flagged rows at λ/10 and 10λ (default true), over the top `stabilityTop` (default 10). */
  stability?: boolean;
  stabilityTop?: number;
  tau: number;
  solver?: SolverKind;
  selfInfluence?: SelfInfluenceMethod;
  batchSize?: number;
  cache?: RowsCache | null;
  signal?: AbortSignal;
  onProgress?: Progress;
}

export interface AuditResult {
  rows: TrainingRows;
  heldOut: (HeldOut & { rows: RunRows }) | null;
  damping: number;
  /** λ on the rows' effective head (differs from damping only for logits scale·z). */
  effectiveDamping: number;
  dampingRule: string;
  impliedL2: { lambda: number; residual: number } | null;
  head: HeadReport;
  stability: Stability | null;
  scores: AuditScores;
  /** What the tool decided on the user's behalf, in words. */
  notes: string[];
  /** Signs that the result is probably wrong (a class order that does not fit, non-finite scores). */
  warnings: Warning[];
  /** The class names (--classes, the model's metadata, the sorted labels, an image folder's folders or a ClassLabel's names), or null. */
  classes: string[] | null;
  /** The training file's label column (guessed when it has no `label` column; a note says so); null for an image folder. */
  labelColumn: string | null;
  /** How the training and held-out files were read. */
  tables: { train: TableRead; heldOut: TableRead | null };
  heldOutLoss: number | null;
  heldOutAccuracy: number | null;
  seconds: Record<string, number>;
}

/** Forward passes over the training and held-out files, the damping, and the audit's scores. */
export async function audit(req: AuditRequest, engine?: Engine): Promise<AuditResult> {
  const t0 = performance.now();
  const own = !engine;
  const eng = engine ?? (await Engine.open(req.model, { output: req.output }));
  try {
    const images = req.images ?? {};
    const run = { signal: req.signal, onProgress: req.onProgress, batchSize: req.batchSize, cache: req.cache, images };
    const table = { ...req.table, ...(images.imageColumn !== undefined ? { imageColumn: images.imageColumn } : {}) };
    // How to read the files (tables, manifests, Parquet/Arrow, image folders): the training data
    // decide, and the held-out data follow them.
    const trainTable = await eng.chooseSource(req.train, table, { signal: req.signal });
    const heldOutTable = req.heldOut
      ? await eng.chooseSource(req.heldOut.path, table, { like: trainTable, requireLabel: true, signal: req.signal })
      : null;
    const rows = await readTrainingRows(eng, req.train, trainTable.options, run, req);
    if (rows.n === 0)
      throw new InfluenceError('NO_ROWS', 'the training file has a header but no data rows', { file: req.train });
    let heldOut: AuditResult['heldOut'] = null;
    const writes = [rows.written];
    if (req.heldOut) {
      const h = await readRows(eng, req.heldOut.path, heldOutTable!.options, run);
      writes.push(h.written);
      if (h.n === 0)
        throw new InfluenceError('NO_ROWS', `the ${req.heldOut.source} file has a header but no data rows`, {
          file: req.heldOut.path,
        });
      heldOut = { ...req.heldOut, rows: h };
    }
    const forwardSeconds = (performance.now() - t0) / 1000;
    throwIfAborted(req.signal);
    const prep = await prepareHead(eng, rows, {
      damping: req.damping,
      head: req.head,
      signal: req.signal,
      onProgress: req.onProgress,
    });
    const { damping, effective, rule } = prep.damping;
    // A refit head has its own g: neither the curvature kept for the shipped rows nor the Hessian summed during the pass applies.
    const train = prep.head.mode === 'refit' ? { ...prep.rows, store: null, explicitHessian: null } : rows;
    if (heldOut && prep.head.mode === 'refit')
      heldOut = { ...heldOut, rows: { ...heldOut.rows, ...rowsAt(heldOut.rows, prep.theta) } };
    const opts = {
      damping: effective,
      tau: req.tau,
      solver: req.solver,
      selfInfluence: req.selfInfluence,
      store: train.store,
      explicitHessian: train.explicitHessian,
      signal: req.signal,
      onProgress: req.onProgress,
    };
    const curv = await Curvature.create(train, effective, opts);
    let scores: AuditScores;
    let stability: Stability | null = null;
    const ts = performance.now();
    try {
      scores = await auditScores(train, heldOut, opts, curv);
      if (req.stability !== false)
        stability = await auditStability(train, heldOut, opts, curv, scores, req.stabilityTop ?? 10, damping);
    } finally {
      await curv.release();
    }
    const stabilitySeconds = (performance.now() - ts) / 1000 - (scores.seconds.audit ?? 0);
    await Promise.all(writes.map((w) => w()));
    let heldOutLoss: number | null = null;
    let heldOutAccuracy: number | null = null;
    if (heldOut) {
      const h = heldOut.rows;
      const task = taskFor(h.C);
      let loss = 0;
      let correct = 0;
      for (let i = 0; i < h.n; i++) {
        loss += h.loss[i];
        if (task.ownMargin(h.z.subarray(i * h.C, (i + 1) * h.C), h.labels[i]).margin > 0) correct++;
      }
      heldOutLoss = loss / h.n;
      heldOutAccuracy = correct / h.n;
    }
    const classes = trainTable.options.classes ?? null;
    const warnings: Warning[] = [];
    const order = classOrderWarning(rows, taskFor(rows.C), classes, trainTable.classesFrom);
    if (order) warnings.push(order);
    const { lossWithout, marginWithout, selfInfluence, heldOutInfluence, suspicion } = scores;
    const nonFinite = nonFiniteWarning({ lossWithout, marginWithout, selfInfluence, heldOutInfluence, suspicion });
    if (nonFinite) warnings.push(nonFinite);
    const notes = mergeNotes(
      eng.notes,
      trainTable.notes,
      heldOutTable?.notes ?? [],
      rows.source?.notes ?? [],
      heldOut?.rows.source?.notes ?? [],
    );
    const tables = { train: tableRead(trainTable), heldOut: heldOutTable ? tableRead(heldOutTable) : null };
    const seconds = {
      forward: forwardSeconds,
      ...scores.seconds,
      ...(stability ? { stability: stabilitySeconds } : {}),
      total: (performance.now() - t0) / 1000,
    };
    return {
      rows: train,
      heldOut,
      damping,
      effectiveDamping: effective,
      dampingRule: rule,
      impliedL2: prep.damping.implied,
      head: prep.head,
      stability,
      scores,
      notes,
      warnings,
      classes,
      labelColumn: trainTable.kind === 'imagefolder' ? null : rows.table.labelColumn,
      tables,
      heldOutLoss,
      heldOutAccuracy,
      seconds,
    };
  } finally {
    if (own) await eng.release();
  }
}
