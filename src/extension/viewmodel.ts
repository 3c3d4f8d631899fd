/**
 * Engine results → the panel's view data and the training file's marks. Pure (no vscode): it runs in the
 * engine's child process, so only the few listed rows cross the process boundary.
 */
import { quantile, reasonsFor, suspicionOrder, topRows, type AuditResult, type ExplainResult } from '../core';
import type {
  AgreementView,
  AuditView,
  ExplainView,
  FlaggedRow,
  ImageShape,
  LayerChoice,
  RowFile,
  RowView,
  TrustView,
} from '../protocol/webview';
import { describeAgreement, describeLayerSet, describeLossChange, describeReason } from '../protocol/words';
import type { RowMark } from '../protocol/engine';

/**
 * The image shape of a feature vector: from the setting ('HxW' forces, 'none' disables), else
 * the model input [1,H,W] / [H,W] / [H,W,1], else a perfect square F ≥ 64.
 */
export function imageShape(setting: string, inputDims: number[], F: number): ImageShape | null {
  const s = setting.trim().toLowerCase();
  if (s === 'none') return null;
  const m = /^(\d+)\s*[x×]\s*(\d+)$/.exec(s);
  if (m) {
    const height = Number(m[1]);
    const width = Number(m[2]);
    return height * width === F && height > 0 ? { height, width } : null;
  }
  const dims = inputDims.filter((d, i) => !(d === 1 && (i === 0 || i === inputDims.length - 1)));
  if (inputDims.length >= 2 && dims.length === 2) return { height: dims[0], width: dims[1] };
  const r = Math.round(Math.sqrt(F));
  return F >= 64 && r * r === F ? { height: r, width: r } : null;
}

export function histogram(values: Float64Array, bins: number): { edges: number[]; counts: number[] } {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!(hi > lo)) {
    lo = (lo || 0) - 1e-12;
    hi = (hi || 0) + 1e-12;
  }
  const edges = Array.from({ length: bins + 1 }, (_, k) => lo + ((hi - lo) * k) / bins);
  const counts = new Array<number>(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.floor(((v - lo) / (hi - lo)) * bins))]++;
  return { edges, counts };
}

function rowView(r: ExplainResult, i: number, features: Map<number, number[]>, files?: Map<number, RowFile>): RowView {
  const s = r.scores;
  return {
    ...files?.get(i),
    row: i,
    line: r.rows.line[i],
    label: r.rows.label[i],
    predicted: r.rows.predicted[i],
    lossChangeIfRemoved: s.lossChangeIfRemoved[i],
    lossChangeIfRemovedNewton: s.lossChangeIfRemovedNewton[i],
    influence: s.influence[i],
    selfInfluence: s.selfInfluence[i],
    relativeInfluence: s.relativeInfluence[i],
    classificationInfluence: s.classificationInfluence[i],
    features: features.get(i),
  };
}

export interface ListedRows {
  byInfluence: { helpful: number[]; harmful: number[] };
  byRelative: { helpful: number[]; harmful: number[] };
}

/**
 * Rows listed by the panel: top k by lossChangeIfRemoved, and top k by relative influence
 * (helpful = most negative relative influence, i.e. most loss reduction per unit of self-influence).
 */
export function listedRows(r: ExplainResult, k: number): ListedRows {
  const byInfluence = topRows(r.scores.lossChangeIfRemoved, k);
  const neg = Float64Array.from(r.scores.relativeInfluence, (v) => -v);
  const byRelative = topRows(neg, k);
  return { byInfluence, byRelative };
}

/** Every row of the lists, for their thumbnails (a row may be in several lists). */
export function allListed(listed: ListedRows): number[] {
  return [
    ...listed.byInfluence.helpful,
    ...listed.byInfluence.harmful,
    ...listed.byRelative.helpful,
    ...listed.byRelative.harmful,
  ];
}

/** The head, stability and notes of a result, as the panel shows them. */
function trustView(r: Pick<ExplainResult, 'head' | 'stability' | 'notes' | 'warnings'>): TrustView {
  const { mode, gradNorm, relGradNorm, warning, message } = r.head;
  return {
    head: { mode, gradNorm, relGradNorm, warning, message },
    stability: r.stability,
    warnings: r.warnings.map((w) => w.message),
    notes: r.notes,
  };
}

/** The agreement badge's data and words. */
function agreementView(r: ExplainResult): AgreementView | null {
  const a = r.agreement;
  if (!a) return null;
  const overlap = (o: { overlap: number; of: number }) => ({ overlap: o.overlap, of: o.of });
  return {
    faithful: a.faithful,
    message: describeAgreement(a, r.layers.length === 1),
    spearman: a.spearman,
    k: a.k,
    helpful: overlap(a.helpful),
    harmful: overlap(a.harmful),
    head: describeLayerSet(a.head.layers, a.head.curvature, r.model.layers),
    deeper: describeLayerSet(a.deeper.layers, a.deeper.curvature, r.model.layers),
    damping: a.damping,
    rows: r.train.rows,
  };
}

/**
 * The panel's view of an explanation, with the rows `listed` (ranked once, by the caller, who also
 * reads their thumbnails: `features` for rows of a text file drawn as images, `files` for rows that
 * are image files or rows of Parquet/Arrow files, with the test row's as `testFile`).
 */
export function explainView(
  r: ExplainResult,
  listed: ListedRows,
  opts: {
    image: ImageShape | null;
    features: Map<number, number[]>;
    files?: Map<number, RowFile>;
    testFile?: RowFile;
    layers?: LayerChoice;
  },
): ExplainView {
  const rv = (ids: number[]) => ids.map((i) => rowView(r, i, opts.features, opts.files));
  const hist = histogram(r.scores.lossChangeIfRemoved, 40);
  const marked = [
    ...listed.byInfluence.helpful.map((row) => ({
      row,
      line: r.rows.line[row],
      value: r.scores.lossChangeIfRemoved[row],
      kind: 'helpful' as const,
    })),
    ...listed.byInfluence.harmful.map((row) => ({
      row,
      line: r.rows.line[row],
      value: r.scores.lossChangeIfRemoved[row],
      kind: 'harmful' as const,
    })),
  ];
  return {
    model: { path: r.model.path, layer: r.model.layer, parameters: r.model.parameters, output: r.model.output },
    layers: {
      choice: opts.layers ?? 'head',
      available: r.model.layers,
      used: r.layers.map(({ index, name, kind, parameters }) => ({ index, name, kind, parameters })),
      curvature: r.curvature,
      headOnly: r.headOnly,
    },
    agreement: agreementView(r),
    classes: r.classes,
    damping: r.damping,
    dampingRule: r.dampingRule,
    selfInfluenceMethod: r.selfInfluenceMethod,
    train: { path: r.train.path, rows: r.train.rows },
    test: opts.testFile?.thumb ? { ...r.test, ...opts.testFile, features: [] } : { ...r.test, ...opts.testFile },
    image: opts.image,
    ...(r.rows.locator?.kind === 'images' || opts.testFile?.thumb ? { images: true } : {}),
    ...(r.preprocess ? { preprocess: r.preprocess.steps } : {}),
    byInfluence: { helpful: rv(listed.byInfluence.helpful), harmful: rv(listed.byInfluence.harmful) },
    byRelative: { helpful: rv(listed.byRelative.helpful), harmful: rv(listed.byRelative.harmful) },
    flip: r.scores.flip
      ? {
          rows: r.scores.flip.rows.map((row) => ({ row, line: r.rows.line[row], ...opts.files?.get(row) })),
          newClass: r.scores.flip.newClass,
        }
      : null,
    histogram: { ...hist, marked },
    seconds: r.seconds.total,
    ...trustView(r),
  };
}

/** The training file's marks: the histogram's marked rows (the top helpful and harmful), each worded. */
export function explainMarks(view: ExplainView): RowMark[] {
  const listed = new Map([...view.byInfluence.helpful, ...view.byInfluence.harmful].map((v) => [v.row, v]));
  return view.histogram.marked.map(({ row, line, kind, value }) => ({
    row,
    line,
    kind,
    value,
    message: describeLossChange(value),
    ...fileOf(listed.get(row)),
  }));
}

/** A mark's file and thumbnail, from its listed row. */
function fileOf(v: RowFile | undefined): { file?: string; thumb?: string } {
  return { ...(v?.file ? { file: v.file } : {}), ...(v?.thumb ? { thumb: v.thumb } : {}) };
}

/** Memorized rows first (by suspicion), then the most suspicious others, k in all at most. */
export function flaggedRows(a: AuditResult, k: number): number[] {
  const s = a.scores;
  const order = suspicionOrder(s.suspicion);
  const mem = s.memorized ? order.filter((i) => s.memorized![i]) : [];
  const rest = order.filter((i) => !s.memorized?.[i]);
  return [...mem, ...rest].slice(0, Math.max(k, mem.length));
}

/** The panel's view of an audit, with the `flagged` rows (ranked once, by the caller, who also reads their thumbnails). */
export function auditView(
  a: AuditResult,
  flaggedIds: number[],
  opts: {
    classes: string[] | null;
    image: ImageShape | null;
    trainPath: string;
    features: Map<number, number[]>;
    files?: Map<number, RowFile>;
  },
): AuditView {
  const s = a.scores;
  const p95 = quantile(s.selfInfluence, 0.95);
  const flagged: FlaggedRow[] = flaggedIds.map((i) => ({
    row: i,
    line: a.rows.lines[i],
    label: a.rows.labels[i],
    predicted: s.predicted[i],
    suspicion: s.suspicion[i],
    memorized: s.memorized?.[i] === 1,
    reasons: reasonsFor(s, a.rows, i, p95),
    features: opts.features.get(i),
    ...opts.files?.get(i),
  }));
  return {
    train: { path: opts.trainPath, rows: a.rows.n },
    heldOut: a.heldOut
      ? {
          path: a.heldOut.path,
          rows: a.heldOut.rows.n,
          source: a.heldOut.source,
          loss: a.heldOutLoss!,
          accuracy: a.heldOutAccuracy!,
        }
      : null,
    classes: opts.classes,
    image: opts.image,
    ...(a.rows.locator?.kind === 'images' ? { images: true } : {}),
    ...(a.rows.source?.preprocess ? { preprocess: a.rows.source.preprocess.steps } : {}),
    damping: a.damping,
    dampingRule: a.dampingRule,
    ...trustView(a),
    memorizedCount: s.memorized ? s.memorized.reduce((x, y) => x + y, 0) : null,
    flagged,
  };
}

/** The training file's marks and Problems-panel entries: the flagged rows, with their reasons in words. */
export function auditMarks(view: AuditView): RowMark[] {
  return view.flagged.map((f) => ({
    row: f.row,
    line: f.line,
    kind: f.memorized ? 'memorized' : 'suspicious',
    value: f.suspicion,
    message: `${f.memorized ? 'Memorized' : 'Suspicious'} row ${f.row} (suspicion ${f.suspicion.toFixed(3)}): ${f.reasons.map((x) => describeReason(x, view.classes)).join('; ') || 'among the most suspicious rows'}`,
    ...fileOf(f),
  }));
}
