/** Human-readable `explain` report: every number with its meaning. */
import {
  topRows,
  type Agreement,
  type DeepCurvatureMethod,
  type ExplainResult,
  type HeadReport,
  type LayerSummary,
  type Stability,
  type Warning,
} from '../core';
import { className as clsName, describeAgreement, describeLayerSet, fmt } from '../protocol/words';
import { rowWhere, shown } from './images';

/** A training row's place in words: its line, or its file (and row in a Parquet/Arrow file). */
function where(r: ExplainResult, i: number): string {
  const w = rowWhere(r.rows.line[i], r.rows.locator, i);
  if (w.file === undefined) return `line ${w.line}`;
  return `${w.file}${w.fileRow !== undefined ? ` row ${w.fileRow}` : ''}${w.line ? `, line ${w.line}` : ''}`;
}

/** The tool's decisions on the user's behalf, one `note:` line each on stderr (stdout stays the result). */
export function printNotes(notes: string[]): void {
  for (const n of notes) process.stderr.write(`note: ${n}\n`);
}

/** The head scored and how far from the optimum influence assumes, with the warning when it is far. */
export function headLines(h: HeadReport): string[] {
  const at = `‖∇J‖ = ${h.gradNorm.toExponential(2)} (${h.relGradNorm.toPrecision(2)} of an untrained head's)`;
  const lines = [
    `  head: ${h.mode === 'refit' ? 'refit to the optimum of the damped objective' : 'as shipped'}, ${at}`,
  ];
  if (h.message) lines.push(`  ${h.warning ? 'WARNING: ' : ''}${h.message}`);
  return lines;
}

/** Whether the listed rows hold at λ/10 and 10λ. */
export function stabilityLines(s: Stability | null, what: string): string[] {
  if (!s) return [];
  const pairs = Object.entries(s.overlaps).map(([name, [lo, hi]]) => `${name} ${lo.toFixed(2)} / ${hi.toFixed(2)}`);
  return [
    `  stability: ${s.stable ? 'stable' : 'SENSITIVE TO DAMPING'}: Jaccard overlap of the ${what} ${s.k} at λ with λ/10 / 10λ: ${pairs.join(', ')}`,
  ];
}

/** The layers a result beyond the head is taken over, its curvature, and what is head-only there. */
export function layersLine(layers: LayerSummary[], curvature: DeepCurvatureMethod | null, headOnly: string): string {
  return `  layers: ${layers.map((l) => `${l.index} '${l.name}' (${l.kind}, ${l.parameters})`).join(', ')}; ${layers.reduce((a, l) => a + l.parameters, 0)} parameters; curvature ${curvature === 'exact' ? 'exact Gauss–Newton' : 'EK-FAC per layer'}; ${headOnly}`;
}

/** "Is the head enough here?": the verdict, and what its numbers compare. */
export function agreementLines(r: ExplainResult): string[] {
  const a = r.agreement;
  if (!a) return [];
  const side = (s: Agreement['head']) => describeLayerSet(s.layers, s.curvature, r.model.layers);
  const headResult = r.layers.length === 1;
  return [
    `  is the head enough here? ${describeAgreement(a, false)}${!a.faithful && headResult ? '; see them with --layers 2' : ''}`,
    `    ρ: Spearman rank correlation of the test-loss changes by ${side(a.head)} and by ${side(a.deeper)} over all ${r.train.rows} rows at λ = ${a.damping.toPrecision(3)}; overlap: rows both rankings put among their ${a.k} most helpful / most harmful`,
  ];
}

/** Signs that the result is probably wrong, one `warning:` line each on stderr. */
export function printWarnings(warnings: Warning[]): void {
  for (const w of warnings) process.stderr.write(`warning: ${w.message}\n`);
}

/** fmt, or n/a for a number that is not finite (a NON_FINITE warning says why): a table never shows Infinity or NaN. */
export function num(x: number, digits?: number): string {
  return Number.isFinite(x) ? fmt(x, digits) : 'n/a';
}

function pad(s: string, w: number, right = false): string {
  return right ? s.padStart(w) : s.padEnd(w);
}

export function formatExplain(r: ExplainResult, top: number): string {
  const s = r.scores;
  const t = r.test;
  const out: string[] = [];
  const cls = (c: number) => clsName(r.classes, c);
  out.push(
    `Influence Lens: explaining row ${t.row} (${t.file !== undefined ? `${shown(t.file)}${t.fileRow !== undefined ? ` row ${t.fileRow}` : ''}` : `line ${t.line}`}) of ${t.path}`,
  );
  if (r.preprocess) out.push(`  preprocessing: ${r.preprocess.steps.join('; ')}`);
  out.push(
    `  ${t.labelled ? `label ${cls(t.label)}` : `no label column: explaining the predicted class ${cls(t.label)}`}, predicted ${cls(t.predicted)} with p = ${t.probabilities[t.predicted].toFixed(4)}; test loss ${t.loss.toPrecision(4)}; margin ${t.margin.toPrecision(4)} over class ${cls(t.runnerUp)}`,
  );
  out.push(
    `  model ${r.model.path}: final layer '${r.model.layer}' with ${r.model.parameters} parameters, output '${r.model.outputName}' (${r.model.output}${r.model.task === 'binary' ? ', binary' : ''}); ${r.train.rows} training rows`,
  );
  const named = r.classes?.some((c, i) => c !== String(i)) ? r.classes! : null;
  out.push(
    `  ${r.labelColumn === null ? 'labels from the class folders' : `label column ${JSON.stringify(r.labelColumn)}`}${named ? `; classes ${named.slice(0, 12).join(', ')}${named.length > 12 ? ', …' : ''}` : ''}`,
  );
  if (r.headOnly.length)
    out.push(layersLine(r.layers, r.curvature, 'Newton estimates and --verify-top are head-only (n/a)'));
  out.push(
    `  damping λ = ${r.damping} (${r.dampingRule}); solver ${r.solver}${r.cgIterations !== null ? ` (${r.cgIterations} CG iterations)` : ''}; self-influence ${r.selfInfluenceMethod}`,
  );
  out.push(...headLines(r.head), ...stabilityLines(r.stability, 'top'), ...agreementLines(r));
  out.push('');
  const { helpful, harmful } = topRows(s.lossChangeIfRemoved, top);
  const images = !!r.rows.locator && !r.rows.locator.manifest;
  const header = `  ${pad('row', 7, true)} ${pad(images ? '' : 'line', 7, true)} ${pad('label', 6, true)} ${pad('pred', 5, true)}  ${pad('Δ test loss if removed', 23, true)} ${pad('(Newton)', 10, true)} ${pad('relative', 10, true)} ${pad('Δ margin', 10, true)}${images ? '  file' : ''}`;
  const line = (i: number) =>
    `  ${pad(String(i), 7, true)} ${pad(images ? '' : String(r.rows.line[i]), 7, true)} ${pad(String(r.rows.label[i]), 6, true)} ${pad(String(r.rows.predicted[i]), 5, true)}  ${pad(num(s.lossChangeIfRemoved[i]), 23, true)} ${pad(num(s.lossChangeIfRemovedNewton[i]), 10, true)} ${pad(num(s.relativeInfluence[i]), 10, true)} ${pad(num(s.classificationInfluence[i]), 10, true)}${images ? `  ${where(r, i)}` : ''}`;
  out.push(
    `Most helpful rows: removing one and refitting would RAISE this test loss by the amount shown (first-order estimate; Newton = leverage-corrected).`,
  );
  out.push(header);
  out.push(...(helpful.length ? helpful.map(line) : ['  (none)']));
  out.push('');
  out.push(`Most harmful rows: removing one and refitting would LOWER this test loss by the amount shown.`);
  out.push(header);
  out.push(...(harmful.length ? harmful.map(line) : ['  (none)']));
  out.push('');
  out.push(
    `  relative = influence / sqrt(self-influence) (RelatIF); Δ margin = first-order change of z[${t.predicted}] − z[${t.runnerUp}] if the row is removed (negative pushes towards class ${cls(t.runnerUp)}).`,
  );
  if (s.flip) {
    const lines = s.flip.rows.map((i) => `${i} (${where(r, i)})`).join(', ');
    out.push(
      `Flip set: removing ${s.flip.rows.length === 1 ? 'this row' : `these ${s.flip.rows.length} rows`} would change the prediction from ${cls(t.predicted)} to ${cls(s.flip.newClass)} (first-order): ${lines}`,
    );
  } else {
    out.push(
      `Flip set: no set of at most ${Math.ceil(0.05 * r.train.rows)} rows (5% of the training data) flips this prediction, to first order.`,
    );
  }
  if (r.verified) {
    out.push('');
    out.push(
      `Verified by exact refits of the final layer (‖∇J‖ ≤ ${r.verified.gradNorm.toExponential(1)}): change of the test loss if the row is removed`,
    );
    out.push(
      `  ${pad('row', 7, true)}  ${pad('first-order', 12, true)} ${pad('Newton', 12, true)} ${pad('actual', 12, true)}`,
    );
    for (const v of r.verified.rows) {
      out.push(
        `  ${pad(String(v.row), 7, true)}  ${pad(num(v.lossChangeIfRemoved), 12, true)} ${pad(num(v.lossChangeIfRemovedNewton), 12, true)} ${pad(num(v.actualLossChangeIfRemoved), 12, true)}`,
      );
    }
  }
  out.push(`Took ${r.seconds.total.toFixed(2)} s.`);
  return out.join('\n') + '\n';
}
