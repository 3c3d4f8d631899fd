/**
 * `audit --layers K|all|names` (orchestration only): self-influence, held-out influence, suspicion
 * and the memorized flags over the last layers rather than the head alone. The training rows and
 * the curvature are explain's beyond the head (deepRun.ts), the held-out set is one gradient sum,
 * and the scores are scores/deep.ts's: one pass over the training rows per damping, their
 * gradients never kept. The head's closed-form leave-one-out step
 * (lossWithout, marginWithout and the reasons built on them) is head-only: null here, listed in
 * `headOnly`; suspicion and the memorized flags use the first-order leave-one-out loss instead.
 */
import { InfluenceError, throwIfAborted } from './errors';
import type { AuditRequest, AuditResult } from './auditShapes';
import { classOrderWarning, nonFiniteWarning, type Warning } from './checks';
import { mergeNotes, tableRead } from './data/choose';
import { asRunRows, deepHead, heldOutDeep, openDeep, trainDeep } from './deepRun';
import { prepareHead } from './headfit';
import type { Engine } from './model/engine';
import { describeLayers, layerSummaries } from './model/layers';
import { heldOutFit } from './scores/audit';
import { deepAuditScores } from './scores/deep';
import { auditStability, type Stability } from './scores/stability';
import { taskFor } from './task/loss';

/** The per-row scores that need the head's closed-form leave-one-out step, null beyond the head. */
export const AUDIT_HEAD_ONLY = ['lossWithout', 'marginWithout'] as const;

export async function auditDeep(req: AuditRequest, eng: Engine): Promise<AuditResult> {
  const t0 = performance.now();
  const { deep, method } = await openDeep(eng, { layers: req.layers!, curvature: req.curvature, head: req.head });
  try {
    const images = req.images ?? {};
    const run = { signal: req.signal, onProgress: req.onProgress, batchSize: req.batchSize, cache: req.cache, images };
    const table = { ...req.table, ...(images.imageColumn !== undefined ? { imageColumn: images.imageColumn } : {}) };
    const trainTable = await eng.chooseSource(req.train, table, { signal: req.signal });
    const heldOutTable = req.heldOut
      ? await eng.chooseSource(req.heldOut.path, table, { like: trainTable, requireLabel: true, signal: req.signal })
      : null;
    const training = await trainDeep(deep, method, req.train, trainTable.options, run);
    const rows = training.rows;
    if (rows.n === 0)
      throw new InfluenceError('NO_ROWS', 'the training file has a header but no data rows', { file: req.train });
    const held = req.heldOut ? await heldOutDeep(deep, req.heldOut.path, heldOutTable!.options, run) : null;
    if (req.heldOut && held!.rows.n === 0)
      throw new InfluenceError('NO_ROWS', `the ${req.heldOut.source} file has a header but no data rows`, {
        file: req.heldOut.path,
      });
    const forwardSeconds = (performance.now() - t0) / 1000;
    throwIfAborted(req.signal);
    // The damping rules read the head (its L2 is the weight decay of every layer); λ is on θ here.
    const prep = await prepareHead(eng, rows, { damping: req.damping, head: 'shipped', signal: req.signal });
    const { damping } = prep.damping;
    const opts = { tau: req.tau, signal: req.signal };
    const heldOutSum = held ? { gradSum: held.rows.gradSum!, n: held.rows.n } : null;
    const score = async (d: number) => {
      const curv = await training.curvature(d, req.signal);
      try {
        return await deepAuditScores(deep, rows, heldOutSum, curv, training.pass, opts);
      } finally {
        await curv.release();
      }
    };
    const scores = await score(damping);
    let stability: Stability | null = null;
    const ts = performance.now();
    if (req.stability !== false)
      stability = await auditStability(scores, req.stabilityTop ?? 10, damping, (f) => score(damping * f));
    const stabilitySeconds = (performance.now() - ts) / 1000;
    await training.written();
    await held?.written();
    const fit = held ? heldOutFit(held.rows) : null;
    const classes = trainTable.options.classes ?? null;
    const warnings: Warning[] = [];
    const order = classOrderWarning(rows, taskFor(rows.C), classes, trainTable.classesFrom);
    if (order) warnings.push(order);
    const { selfInfluence, heldOutInfluence, suspicion } = scores;
    const nonFinite = nonFiniteWarning({ selfInfluence, heldOutInfluence, suspicion });
    if (nonFinite) warnings.push(nonFinite);
    const notes = [
      `audit over the last layers: ${describeLayers(deep.chosen)}; ${deep.P} parameters; curvature: ${method === 'exact' ? 'the exact damped Gauss–Newton matrix' : 'EK-FAC per layer (block-diagonal across layers)'}`,
      `head-only, so null here (listed in headOnly), as they rest on the head's closed-form refit: lossWithout and marginWithout; suspicion and the memorized flags use the first-order leave-one-out loss, loss + selfInfluence/n (memorized: above ln 2, the label's probability below 1/2 without the row)`,
    ];
    return {
      rows: asRunRows(rows, training.cache, training.written),
      heldOut: req.heldOut && held ? { ...req.heldOut, rows: asRunRows(held.rows, held.cache, held.written) } : null,
      effectiveDamping: damping,
      ...deepHead(prep),
      stability,
      layers: layerSummaries(deep.chosen),
      curvature: method,
      headOnly: [...AUDIT_HEAD_ONLY],
      agreement: null,
      scores,
      notes: mergeNotes(eng.notes, trainTable.notes, heldOutTable?.notes ?? [], notes),
      warnings,
      classes,
      labelColumn: trainTable.kind === 'imagefolder' ? null : rows.table.labelColumn,
      tables: { train: tableRead(trainTable), heldOut: heldOutTable ? tableRead(heldOutTable) : null },
      heldOutLoss: fit?.loss ?? null,
      heldOutAccuracy: fit?.accuracy ?? null,
      seconds: {
        forward: forwardSeconds,
        ...scores.seconds,
        ...(stability ? { stability: stabilitySeconds } : {}),
        total: (performance.now() - t0) / 1000,
      },
    };
  } finally {
    await deep.release();
  }
}
