/**
 * `audit`: memorized and suspicious training rows (orchestration only). Beyond the head
 * (`--layers`) it is auditDeep's; with the head it also audits the last 2 layers, by default, and
 * reports how far the two agree.
 */
import { InfluenceError, throwIfAborted } from './errors';
import { auditDeep } from './auditDeep';
import type { AuditRequest, AuditResult } from './auditShapes';
import { classOrderWarning, nonFiniteWarning, type Warning } from './checks';
import { Curvature } from './curvature/curvature';
import { EXACT_GGN_MAX_P } from './curvature/ggn';
import { mergeNotes, tableRead } from './data/choose';
import { headCurvature } from './headCurvature';
import { prepareHead } from './headfit';
import { rowsAt } from './refit';
import { auditStability, type Stability } from './scores/stability';
import { modelLayers } from './model/summary';
import { Engine } from './model/engine';
import { isHeadOnly, layerSummaries, type Layer } from './model/layers';
import { readRows, readTrainingRows, rowsForHead } from './rows';
import { agreement, type AuditAgreement } from './scores/auditAgreement';
import { auditScores, heldOutFit, type AuditScores } from './scores/audit';
import { taskFor } from './task/loss';

export type { AuditRequest, AuditResult };

/** The rows compared by the agreement's top-k overlap (the rows the CLI lists first). */
const SUSPICION_TOP = 20;

/**
 * The agreement's default budget, in multiply-adds of the last 2 layers' per-row self-influence:
 * some 10–20 s on the shared 2-core development machine (the LDS MLP's 7e9 took 2–7 s, the LDS
 * CNN's 1.7e10 18 s; 20,000 rows of the bench MLP, 2.6e11 with EK-FAC, 127 s against the head
 * audit's 4 s). Beyond it the agreement runs only when asked for (`agreement: true`, --agreement).
 */
const AGREEMENT_BUDGET = 2e10;

/**
 * The per-row self-influence's multiply-adds over `layers` for n rows: ∇L_iᵀH⁻¹∇L_i, P² with the
 * exact GGN's inverse; with EK-FAC, each layer's out × D̃ gradient rotated into the eigenbases. The
 * budget was measured against these counts when audit stored gradients; its row scorer now rotates
 * a dense layer's factors instead of its gradient, so for EK-FAC this is an upper bound (20,000 rows
 * of the bench MLP: 2.6e11 counted, 8.2 s now against 127 s then).
 */
function agreementWork(layers: Layer[], n: number): number {
  const P = layers.reduce((a, l) => a + l.parameters, 0);
  if (P <= EXACT_GGN_MAX_P) return n * P * P;
  const rotate = (l: Layer, Dt: number) => l.out * Dt * (l.out + Dt);
  return n * layers.reduce((a, l) => a + rotate(l, l.fanIn + (l.bias ? 1 : 0)), 0);
}

/** Forward passes over the training and held-out files, the damping, and the audit's scores. */
export async function audit(req: AuditRequest, engine?: Engine): Promise<AuditResult> {
  const t0 = performance.now();
  const own = !engine;
  const eng = engine ?? (await Engine.open(req.model, { output: req.output }));
  try {
    if (!isHeadOnly(req.layers)) return await auditDeep(req, eng);
    const methods = headCurvature(req, eng);
    const images = req.images ?? {};
    const run = { signal: req.signal, onProgress: req.onProgress, batchSize: req.batchSize, cache: req.cache, images };
    const table = { ...req.table, ...(images.imageColumn !== undefined ? { imageColumn: images.imageColumn } : {}) };
    // How to read the files (tables, manifests, Parquet/Arrow, image folders): the training data
    // decide, and the held-out data follow them.
    const trainTable = await eng.chooseSource(req.train, table, { signal: req.signal });
    const heldOutTable = req.heldOut
      ? await eng.chooseSource(req.heldOut.path, table, { like: trainTable, requireLabel: true, signal: req.signal })
      : null;
    const rows = await readTrainingRows(eng, req.train, trainTable.options, run, methods);
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
    const train = rowsForHead(prep, rows);
    if (heldOut && prep.head.mode === 'refit')
      heldOut = { ...heldOut, rows: { ...heldOut.rows, ...rowsAt(heldOut.rows, prep.theta) } };
    const opts = {
      damping: effective,
      tau: req.tau,
      solver: methods.solver,
      selfInfluence: methods.selfInfluence,
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
        stability = await auditStability(scores, req.stabilityTop ?? 10, damping, async (f) => {
          const c = await curv.withDamping(opts.damping * f, opts.signal);
          try {
            return await auditScores(train, heldOut, { ...opts, damping: opts.damping * f }, c);
          } finally {
            await c.release();
          }
        });
    } finally {
      await curv.release();
    }
    const stabilitySeconds = (performance.now() - ts) / 1000 - (scores.seconds.audit ?? 0);
    await Promise.all(writes.map((w) => w()));
    const fit = heldOut ? heldOutFit(heldOut.rows) : null;
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
    const layers = modelLayers(eng);
    const agreed = req.agreement === false ? null : await layersAgreement(req, eng, scores, layers, notes);
    const seconds = {
      forward: forwardSeconds,
      ...scores.seconds,
      ...(stability ? { stability: stabilitySeconds } : {}),
      ...(agreed ? { agreement: agreed.seconds } : {}),
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
      layers: layerSummaries(layers.slice(0, 1)),
      curvature: null,
      headOnly: [],
      agreement: agreed,
      scores,
      notes,
      warnings,
      classes,
      labelColumn: trainTable.kind === 'imagefolder' ? null : rows.table.labelColumn,
      tables,
      heldOutLoss: fit?.loss ?? null,
      heldOutAccuracy: fit?.accuracy ?? null,
      seconds,
    };
  } finally {
    if (own) await eng.release();
  }
}

/**
 * The head's audit against the last 2 layers' on the same data and damping rule (no stability
 * check there): null, with the reason as a note, when the model or the data do not allow it.
 */
async function layersAgreement(
  req: AuditRequest,
  eng: Engine,
  head: AuditScores,
  layers: Layer[],
  notes: string[],
): Promise<AuditAgreement | null> {
  const n = head.n;
  const skip = (why: string) => {
    notes.push(`no agreement with the last 2 layers: ${why}`);
    return null;
  };
  if (layers.length < 2) return skip('the model has one parameterized layer, the head');
  if (req.head === 'refit') return skip('--head refit scores a refit head; the last 2 layers are scored as shipped');
  const work = agreementWork(layers.slice(0, 2), n);
  if (req.agreement === undefined && work > AGREEMENT_BUDGET)
    return skip(
      `their per-row self-influence would take about ${work.toPrecision(2)} multiply-adds, over the default budget of ${AGREEMENT_BUDGET.toPrecision(2)} (--agreement runs it anyway; audit --layers 2 gives their audit)`,
    );
  const t0 = performance.now();
  let deep: AuditResult;
  try {
    deep = await auditDeep({ ...req, layers: 2, curvature: undefined, stability: false, agreement: false }, eng);
  } catch (e) {
    if (e instanceof InfluenceError) return skip(e.message);
    throw e;
  }
  return agreement(head, deep.scores, SUSPICION_TOP, {
    layers: deep.layers,
    curvature: deep.curvature!,
    seconds: (performance.now() - t0) / 1000,
  });
}
