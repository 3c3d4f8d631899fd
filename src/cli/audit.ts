/** `audit` and `clean` commands. */
import {
  audit,
  clean,
  Engine,
  InfluenceError,
  modelSummary,
  quantile,
  reasonsFor,
  suspicionOrder,
  type AuditRequest,
  type AuditResult,
  type Progress,
} from '../core';
import { headLines, layersLine, num, printNotes, printWarnings, stabilityLines } from './format';
import {
  agreementFrom,
  cacheFrom,
  damping,
  headOptions,
  int,
  layersFrom,
  list,
  oneOf,
  parseRemoveSpec,
  required,
  str,
  type Flags,
} from './args';
import { className, describeReason } from '../protocol/words';
import { jsonText, JsonWriter } from './json';
import { imageRequest, rowWhere } from './images';

function tau(flags: Flags): number {
  const v = str(flags, 'tau');
  if (v === undefined) return 0;
  const t = Number(v);
  if (!Number.isFinite(t) || t < 0 || v.trim() === '')
    throw new InfluenceError('BAD_OPTION', `--tau must be a number ≥ 0; got '${v}'`);
  return t;
}

function heldOutOf(flags: Flags): { path: string; source: 'validation' | 'test' } | null {
  const v = str(flags, 'validation');
  if (v !== undefined) return { path: v, source: 'validation' };
  const t = str(flags, 'test');
  return t !== undefined ? { path: t, source: 'test' } : null;
}

function auditRequest(
  flags: Flags,
  heldOut: AuditRequest['heldOut'],
  signal: AbortSignal,
  onProgress?: Progress,
): AuditRequest {
  return {
    model: required(flags, 'model'),
    output: str(flags, 'output'),
    train: required(flags, 'train'),
    heldOut,
    table: {
      labelColumn: str(flags, 'label-column'),
      features: list(flags, 'features'),
      ignoreColumns: list(flags, 'ignore-columns'),
      classes: list(flags, 'classes'),
    },
    images: imageRequest(flags),
    damping: damping(flags),
    ...headOptions(flags),
    tau: tau(flags),
    solver: oneOf(flags, 'solver', ['cholesky', 'cg'] as const),
    selfInfluence: oneOf(flags, 'self-influence', ['exact', 'ekfac'] as const),
    batchSize: int(flags, 'batch-size', 1),
    layers: layersFrom(flags),
    curvature: oneOf(flags, 'curvature', ['exact', 'ekfac'] as const),
    agreement: agreementFrom(flags),
    cache: cacheFrom(flags),
    signal,
    onProgress,
  };
}

/** A row's place in words: its line, or its file (and row in a Parquet/Arrow file). */
function where(rows: { lines: Int32Array; locator?: import('../core').RowLocator }, i: number): string {
  const w = rowWhere(rows.lines[i], rows.locator, i);
  if (w.file === undefined) return `line ${w.line}`;
  return `${w.file}${w.fileRow !== undefined ? ` row ${w.fileRow}` : ''}${w.line ? `, line ${w.line}` : ''}`;
}

export async function auditCommand(flags: Flags, signal: AbortSignal, onProgress?: Progress): Promise<void> {
  const modelPath = required(flags, 'model');
  const engine = await Engine.open(modelPath, { output: str(flags, 'output') });
  try {
    const r = await audit(auditRequest(flags, heldOutOf(flags), signal, onProgress), engine);
    printNotes(r.notes);
    printWarnings(r.warnings);
    const s = r.scores;
    const n = r.rows.n;
    const p95 = quantile(s.selfInfluence, 0.95);
    const classes = r.classes;
    if (flags.has('json')) {
      const w = new JsonWriter(process.stdout);
      await w.raw('{"version":1');
      await w.field('model', modelSummary(engine, modelPath));
      await w.field('layers', r.layers);
      await w.field('curvature', r.curvature);
      await w.field('headOnly', r.headOnly);
      await w.field('notes', r.notes);
      await w.field('warnings', r.warnings);
      await w.field('labelColumn', r.labelColumn);
      await w.field('classes', classes);
      await w.field('damping', r.damping);
      await w.field('dampingRule', r.dampingRule);
      await w.field('impliedL2', r.impliedL2);
      await w.field('head', r.head);
      await w.field('stability', r.stability);
      await w.field('agreement', r.agreement);
      await w.field('tau', tau(flags));
      await w.field('solver', s.solver);
      await w.field('selfInfluenceMethod', s.selfInfluenceMethod);
      await w.field('train', {
        path: required(flags, 'train'),
        rows: n,
        cache: r.rows.cache,
        ...(r.rows.source ? { kind: r.rows.source.kind, read: r.rows.source.read } : {}),
      });
      if (r.rows.source?.preprocess) await w.field('preprocess', r.rows.source.preprocess);
      await w.field(
        'heldOut',
        r.heldOut
          ? {
              path: r.heldOut.path,
              rows: r.heldOut.rows.n,
              source: r.heldOut.source,
              loss: r.heldOutLoss,
              accuracy: r.heldOutAccuracy,
            }
          : null,
      );
      await w.field('memorizedCount', s.memorized ? s.memorized.reduce((a, b) => a + b, 0) : null);
      await w.raw(',"rows":[');
      for (let i = 0; i < n; i++) {
        await w.raw(
          (i ? ',' : '') +
            jsonText({
              row: i,
              ...rowWhere(r.rows.lines[i], r.rows.locator, i),
              label: r.rows.labels[i],
              predicted: s.predicted[i],
              loss: r.rows.loss[i],
              lossWithout: s.lossWithout[i],
              marginWithout: s.marginWithout[i],
              selfInfluence: s.selfInfluence[i],
              heldOutInfluence: s.heldOutInfluence ? s.heldOutInfluence[i] : null,
              suspicion: s.suspicion[i],
              memorized: s.memorized ? s.memorized[i] === 1 : null,
              reasons: reasonsFor(s, r.rows, i, p95),
            }),
        );
      }
      await w.raw(']');
      await w.field('seconds', r.seconds);
      await w.raw('}\n');
      await w.end();
      return;
    }
    const out: string[] = [];
    out.push(`Influence Lens: audit of ${n} training rows of ${required(flags, 'train')}`);
    if (r.headOnly.length)
      out.push(
        layersLine(
          r.layers,
          r.curvature,
          'leave-one-out losses and margins are head-only: suspicion and memorized use loss + selfInfluence/n',
        ),
      );
    out.push(`  damping λ = ${r.damping} (${r.dampingRule}); self-influence ${s.selfInfluenceMethod}`);
    out.push(...headLines(r.head), ...stabilityLines(r.stability, 'most suspicious (and memorized) rows'));
    out.push(...agreementLines(r.agreement));
    if (r.heldOut)
      out.push(
        `  held-out (${r.heldOut.source}): ${r.heldOut.path}, ${r.heldOut.rows.n} rows, mean loss ${r.heldOutLoss!.toFixed(4)}, accuracy ${(100 * r.heldOutAccuracy!).toFixed(1)}%`,
      );
    else out.push('  no --validation or --test file: held-out influence and memorization flags need one');
    const top = suspicionOrder(s.suspicion).slice(0, 20);
    out.push('');
    out.push(
      `Most suspicious rows (review first; suspicion = ${s.leaveOneOut === 'newton' ? '' : 'first-order '}leave-one-out loss + harm to held-out data):`,
    );
    for (const i of top) {
      const reasons = reasonsFor(s, r.rows, i, p95).map((x) => describeReason(x, classes));
      out.push(
        `  row ${String(i).padStart(6)} (${where(r.rows, i)}), label ${className(classes, r.rows.labels[i])}, suspicion ${Number.isFinite(s.suspicion[i]) ? s.suspicion[i].toFixed(3) : 'n/a'}${s.memorized?.[i] ? ', MEMORIZED' : ''}`,
      );
      for (const t of reasons) out.push(`      - ${t}`);
    }
    if (s.memorized) {
      const mem = Array.from({ length: n }, (_, i) => i).filter((i) => s.memorized![i]);
      out.push('');
      out.push(
        `Memorized rows (${mem.length}): predicted as labelled only because they are in the training set, and not helping held-out data:`,
      );
      out.push(mem.length ? '  ' + mem.map((i) => `${i} (${where(r.rows, i)})`).join(', ') : '  (none)');
    }
    out.push(`Took ${r.seconds.total.toFixed(2)} s.`);
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await engine.release();
  }
}

/** How far the head's audit agrees with the last 2 layers'. */
function agreementLines(a: AuditResult['agreement']): string[] {
  if (!a) return [];
  const { spearman, k, topOverlap } = a.suspicion;
  const mem = a.memorized
    ? `; memorized flags Jaccard ${a.memorized.jaccard.toFixed(2)} (${a.memorized.head} at the head, ${a.memorized.layers} over the last 2 layers)`
    : '';
  return [
    `  agreement with the last 2 layers (${a.layers.reduce((s, l) => s + l.parameters, 0)} parameters, ${a.curvature === 'exact' ? 'exact Gauss–Newton' : 'EK-FAC per layer'}): suspicion Spearman ${Number.isFinite(spearman) ? spearman.toFixed(3) : 'n/a'}, top ${k} overlap ${topOverlap.toFixed(2)}${mem}`,
  ];
}

export async function cleanCommand(flags: Flags, signal: AbortSignal, onProgress?: Progress): Promise<void> {
  const trainPath = required(flags, 'train');
  const validation = required(flags, 'validation');
  const out = required(flags, 'out');
  const remove = parseRemoveSpec(required(flags, 'remove'));
  const r = await clean({
    ...auditRequest(flags, { path: validation, source: 'validation' }, signal, onProgress),
    remove,
    out,
    verify: flags.has('verify'),
  });
  printNotes(r.audit.notes);
  printWarnings(r.audit.warnings);
  const { removed, kept, predicted, verified } = r;
  const result = {
    version: 1,
    layers: r.audit.layers,
    curvature: r.audit.curvature,
    headOnly: r.headOnly,
    notes: r.audit.notes,
    warnings: r.audit.warnings,
    labelColumn: r.audit.labelColumn,
    removed,
    kept,
    out,
    predicted,
    verified,
  };
  if (flags.has('json')) {
    process.stdout.write(jsonText(result) + '\n');
    return;
  }
  const lines = [
    ...(r.audit.headOnly.length
      ? [
          layersLine(
            r.audit.layers,
            r.audit.curvature,
            `rows chosen by the audit over these layers${flags.has('verify') ? '; --verify refits the head alone: head-only, not run here (verified: null)' : ''}`,
          ).trimStart(),
        ]
      : []),
    `Wrote ${out}: ${kept} rows kept, ${removed.length} removed (${removed.slice(0, 20).join(', ')}${removed.length > 20 ? ', …' : ''}); ${trainPath} is unchanged.`,
    `Predicted change of the mean held-out loss (first-order group influence): ${num(predicted.heldOutLossChange)}.`,
  ];
  if (verified) {
    lines.push(
      `Verified by refitting the final layer exactly (‖∇‖ ≤ 1e-10) with and without those rows:`,
      `  held-out loss ${verified.heldOutLossBefore.toFixed(5)} → ${verified.heldOutLossAfter.toFixed(5)} (actual change ${num(verified.heldOutLossAfter - verified.heldOutLossBefore)})`,
      `  held-out accuracy ${(100 * verified.heldOutAccuracyBefore).toFixed(2)}% → ${(100 * verified.heldOutAccuracyAfter).toFixed(2)}%`,
    );
  }
  process.stdout.write(lines.join('\n') + '\n');
}
