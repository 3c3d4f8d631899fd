/**
 * The panel's pure logic: sorting, histogram geometry, thumbnail pixels and the sentences the
 * panel shows. No DOM, no vscode: unit-tested under node (test/unit/webview.test.ts).
 */
import {
  isRanking,
  type ExplainView,
  type FlaggedRow,
  type ImageShape,
  type Ranking,
  type RowView,
} from '../src/protocol/webview';
import { className, fmtSigned } from '../src/protocol/words';

// ---------------------------------------------------------------------------------------------
// Sorting

export type SortDir = 'asc' | 'desc';
export interface SortState {
  key: string;
  dir: SortDir;
}

/** The two ranked tables of the explanation, and the audit's flagged rows. */
export type TableId = 'helpful' | 'harmful' | 'flagged';

export type InfluenceKey =
  'rank' | 'row' | 'line' | 'label' | 'predicted' | 'lossChange' | 'newton' | 'relative' | 'margin';
export type FlaggedKey = 'rank' | 'row' | 'line' | 'label' | 'predicted' | 'suspicion';

/** The sort value of each sortable column of the helpful and harmful tables (and of their lines). */
export const influenceValue: Record<Exclude<InfluenceKey, 'rank'>, (r: RowView) => number> = {
  row: (r) => r.row,
  line: (r) => r.line,
  label: (r) => r.label,
  predicted: (r) => r.predicted,
  lossChange: (r) => r.lossChangeIfRemoved,
  newton: (r) => r.lossChangeIfRemovedNewton,
  relative: (r) => r.relativeInfluence,
  margin: (r) => r.classificationInfluence,
};

/** The sort value of each sortable column of the flagged rows' table (and of their lines). */
export const flaggedValue: Record<Exclude<FlaggedKey, 'rank'>, (r: FlaggedRow) => number> = {
  row: (r) => r.row,
  line: (r) => r.line,
  label: (r) => r.label,
  predicted: (r) => r.predicted,
  suspicion: (r) => r.suspicion,
};

/**
 * Rows sorted by `value` in direction `dir`, as a new array. Stable: ties keep the given (rank)
 * order; NaN sorts last in both directions. `value` null means the given order (`desc` reverses it).
 */
export function sortBy<T>(rows: readonly T[], value: ((r: T) => number) | null, dir: SortDir): T[] {
  const idx = rows.map((_, i) => i);
  if (value === null) return dir === 'asc' ? rows.slice() : idx.reverse().map((i) => rows[i]);
  const v = rows.map(value);
  const sign = dir === 'asc' ? 1 : -1;
  idx.sort((a, b) => {
    const x = v[a];
    const y = v[b];
    const xn = Number.isNaN(x);
    const yn = Number.isNaN(y);
    if (xn || yn) return xn === yn ? a - b : xn ? 1 : -1;
    return x === y ? a - b : x < y ? -sign : sign;
  });
  return idx.map((i) => rows[i]);
}

/**
 * Ranked rows in the order a table's sort asks for: by the column of `values` named by the sort,
 * or by rank (no sort, or the rank column). Keys that name no column keep the rank order.
 */
export function sortRows<T>(
  rows: readonly T[],
  sort: SortState | null,
  values: Readonly<Record<string, (r: T) => number>>,
): T[] {
  if (!sort || !Object.hasOwn(values, sort.key))
    return sort?.key === 'rank' ? sortBy(rows, null, sort.dir) : rows.slice();
  return sortBy(rows, values[sort.key], sort.dir);
}

/**
 * The direction a column sorts in on its first click: the one that keeps the table's most
 * notable rows on top (helpful: largest loss change; harmful: most negative), ascending for ids.
 */
export function firstDir(table: TableId, key: string): SortDir {
  switch (key) {
    case 'lossChange':
    case 'newton':
      return table === 'harmful' ? 'asc' : 'desc';
    case 'relative':
      // Helpful rows have negative influence, so their relative influence is most negative.
      return table === 'harmful' ? 'desc' : 'asc';
    case 'margin':
      return 'asc';
    case 'suspicion':
      return 'desc';
    default:
      return 'asc';
  }
}

/** The sort after clicking column `key`: a new column starts at `firstDir`, the same one flips. */
export function nextSort(current: SortState | null, table: TableId, key: string): SortState {
  if (current && current.key === key) return { key, dir: current.dir === 'asc' ? 'desc' : 'asc' };
  if (!current && key === 'rank') return { key, dir: 'desc' };
  return { key, dir: firstDir(table, key) };
}

/** The aria-sort value of a column header. Rank order (no sort) reads as the rank column ascending. */
export function ariaSort(sort: SortState | null, key: string): 'ascending' | 'descending' | 'none' {
  const s = sort ?? { key: 'rank', dir: 'asc' as SortDir };
  if (s.key !== key) return 'none';
  return s.dir === 'asc' ? 'ascending' : 'descending';
}

// ---------------------------------------------------------------------------------------------
// UI state kept with vscode.setState

export interface UiState {
  /** Null until the user picks one: the host's `state.ranking` applies. */
  ranking: Ranking | null;
  sort: Record<TableId, SortState | null>;
  /** Where the page was scrolled: VS Code reloads a hidden webview when it is shown again. */
  scrollY: number;
}

export function defaultUiState(): UiState {
  return { ranking: null, sort: { helpful: null, harmful: null, flagged: null }, scrollY: 0 };
}

function parseSort(x: unknown): SortState | null {
  if (typeof x !== 'object' || x === null) return null;
  const { key, dir } = x as { key?: unknown; dir?: unknown };
  if (typeof key !== 'string' || key.length === 0 || key.length > 32) return null;
  if (dir !== 'asc' && dir !== 'desc') return null;
  return { key, dir };
}

/** Whatever getState returned, as a valid UiState (bad or missing parts fall back to defaults). */
export function parseUiState(x: unknown): UiState {
  const ui = defaultUiState();
  if (typeof x !== 'object' || x === null) return ui;
  const { ranking, sort, scrollY } = x as { ranking?: unknown; sort?: unknown; scrollY?: unknown };
  if (isRanking(ranking)) ui.ranking = ranking;
  if (typeof scrollY === 'number' && Number.isFinite(scrollY) && scrollY > 0) ui.scrollY = scrollY;
  if (typeof sort === 'object' && sort !== null) {
    for (const t of ['helpful', 'harmful', 'flagged'] as const)
      ui.sort[t] = parseSort((sort as Record<string, unknown>)[t]);
  }
  return ui;
}

// ---------------------------------------------------------------------------------------------
// Histogram

export interface Bar {
  x: number;
  y: number;
  width: number;
  height: number;
  count: number;
  lo: number;
  hi: number;
}

export interface Marker {
  x: number;
  row: number;
  value: number;
  kind: 'helpful' | 'harmful';
  /** The value lies outside the edges and the marker is pinned to the nearest end. */
  clamped: boolean;
}

export interface Tick {
  x: number;
  value: number;
  label: string;
}

export interface HistogramGeometry {
  /** The plot area inside the margins. */
  plot: { left: number; top: number; width: number; height: number };
  bars: Bar[];
  markers: Marker[];
  /** x of the value 0, or null when 0 is outside the edges. */
  zeroX: number | null;
  maxCount: number;
  total: number;
  xTicks: Tick[];
  log: boolean;
}

export interface Margins {
  left: number;
  right: number;
  top: number;
  bottom: number;
}

export const histogramMargins: Margins = { left: 44, right: 12, top: 10, bottom: 44 };

/**
 * Bars, markers and ticks of a histogram drawn in a width × height box. Bar heights are linear
 * in the count, or in log(1 + count) when `log`; a non-empty bin is at least 1 unit high.
 * Edges must be ascending with edges.length = counts.length + 1, otherwise there are no bars.
 */
export function histogramGeometry(
  h: ExplainView['histogram'],
  width: number,
  height: number,
  opts: { log?: boolean; margins?: Margins; minTickGap?: number } = {},
): HistogramGeometry {
  const m = opts.margins ?? histogramMargins;
  const log = opts.log ?? false;
  const plot = {
    left: m.left,
    top: m.top,
    width: Math.max(0, width - m.left - m.right),
    height: Math.max(0, height - m.top - m.bottom),
  };
  const ok =
    h.edges.length === h.counts.length + 1 &&
    h.counts.length > 0 &&
    h.edges.every((e, i) => Number.isFinite(e) && (i === 0 || e >= h.edges[i - 1]));
  const empty: HistogramGeometry = { plot, bars: [], markers: [], zeroX: null, maxCount: 0, total: 0, xTicks: [], log };
  if (!ok) return empty;
  const xMin = h.edges[0];
  const xMax = h.edges[h.edges.length - 1];
  const span = xMax - xMin;
  const xOf = (v: number) => (span > 0 ? plot.left + ((v - xMin) / span) * plot.width : plot.left + plot.width / 2);
  const counts = h.counts.map((c) => (Number.isFinite(c) && c > 0 ? c : 0));
  const maxCount = Math.max(0, ...counts);
  const scale = (c: number) => (log ? Math.log1p(c) / Math.log1p(maxCount) : c / maxCount);
  const bars: Bar[] = counts.map((count, i) => {
    const x0 = span > 0 ? xOf(h.edges[i]) : plot.left;
    const x1 = span > 0 ? xOf(h.edges[i + 1]) : plot.left + plot.width;
    const bh = count > 0 ? Math.max(1, scale(count) * plot.height) : 0;
    return {
      x: x0,
      y: plot.top + plot.height - bh,
      width: x1 - x0,
      height: bh,
      count,
      lo: h.edges[i],
      hi: h.edges[i + 1],
    };
  });
  const markers: Marker[] = h.marked
    .filter((mk) => Number.isFinite(mk.value))
    .map((mk) => {
      const v = Math.min(xMax, Math.max(xMin, mk.value));
      return { x: xOf(v), row: mk.row, value: mk.value, kind: mk.kind, clamped: v !== mk.value };
    });
  const zeroX = xMin <= 0 && 0 <= xMax ? xOf(0) : null;
  const candidates: Tick[] = [{ x: xOf(xMin), value: xMin, label: fmtAxis(xMin) }];
  if (span > 0) candidates.push({ x: xOf(xMax), value: xMax, label: fmtAxis(xMax) });
  const gap = opts.minTickGap ?? 48;
  const ticks = candidates.slice();
  if (zeroX !== null && ticks.every((t) => Math.abs(t.x - zeroX) >= gap))
    ticks.push({ x: zeroX, value: 0, label: '0' });
  ticks.sort((a, b) => a.x - b.x);
  return { plot, bars, markers, zeroX, maxCount, total: counts.reduce((a, b) => a + b, 0), xTicks: ticks, log };
}

/** An axis number: 0, or 3 significant digits with its sign. */
export function fmtAxis(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  const s = a >= 1e-3 && a < 1e4 ? String(Number(v.toPrecision(3))) : v.toExponential(1);
  return v > 0 ? `+${s}` : s.replace('-', '−');
}

/** One sentence for screen readers describing the histogram. */
export function histogramSummary(h: ExplainView['histogram']): string {
  const g = histogramGeometry(h, 100, 100);
  if (g.bars.length === 0) return 'No distribution of loss changes is available.';
  const lo = h.edges[0];
  const hi = h.edges[h.edges.length - 1];
  let peak = g.bars[0];
  for (const b of g.bars) if (b.count > peak.count) peak = b;
  const helpful = h.marked.filter((m) => m.kind === 'helpful').length;
  const harmful = h.marked.filter((m) => m.kind === 'harmful').length;
  return (
    `Histogram of the first-order change in the test loss if each of ${plural(g.total, 'training row')} were removed, ` +
    `from ${fmtAxis(lo)} to ${fmtAxis(hi)} nats. The fullest bin, ${fmtAxis(peak.lo)} to ${fmtAxis(peak.hi)}, ` +
    `holds ${plural(peak.count, 'row')}. Marked: ${helpful} most helpful (positive) and ${harmful} most harmful (negative) rows.`
  );
}

// ---------------------------------------------------------------------------------------------
// Thumbnails

export const PAPER = 250;
export const INK = 16;

/**
 * The features as an RGBA grayscale image of shape.height × shape.width, min–max normalised:
 * the smallest value is paper (light), the largest ink (dark), like digits on paper. Missing or
 * non-finite values are paper; a constant image is all paper.
 */
export function thumbnailPixels(
  features: readonly number[],
  shape: ImageShape,
  paper = PAPER,
  ink = INK,
): Uint8ClampedArray {
  const n = Math.max(0, Math.floor(shape.height) * Math.floor(shape.width));
  const out = new Uint8ClampedArray(n * 4);
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < n && i < features.length; i++) {
    const v = features[i];
    if (Number.isFinite(v)) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  const range = hi - lo;
  for (let i = 0; i < n; i++) {
    const v = i < features.length ? features[i] : NaN;
    const t = Number.isFinite(v) && range > 0 ? (v - lo) / range : 0;
    const g = Math.round(paper - t * (paper - ink));
    out[4 * i] = g;
    out[4 * i + 1] = g;
    out[4 * i + 2] = g;
    out[4 * i + 3] = 255;
  }
  return out;
}

/** Whether `features` can be drawn as an image of `shape`. */
export function drawable(features: readonly number[] | undefined, shape: ImageShape | null): features is number[] {
  return !!shape && !!features && shape.height > 0 && shape.width > 0 && features.length >= shape.height * shape.width;
}

// ---------------------------------------------------------------------------------------------
// Sentences and numbers

export function plural(n: number, word: string): string {
  return `${n.toLocaleString('en-US')} ${word}${n === 1 ? '' : 's'}`;
}

export const NO_FLIP = 'No set of at most 5% of the training rows flips this prediction (first-order).';

/** How many flip-set rows to list before a "show all" button. */
export const FLIP_SHOWN = 24;

/** The flip-set sentence: which rows, removed together, would change the prediction to what. */
export function flipSentence(flip: ExplainView['flip'], predicted: number, classes: string[] | null): string {
  if (!flip) return NO_FLIP;
  const from = className(classes, predicted);
  const to = className(classes, flip.newClass);
  const k = flip.rows.length;
  if (k === 0) return `The prediction would change from ${from} to ${to} without removing any row (first-order).`;
  const which = k === 1 ? 'this row' : `these ${k.toLocaleString('en-US')} rows`;
  return `Removing ${which} would change the prediction from ${from} to ${to}.`;
}

export interface ProbabilityBar {
  cls: number;
  name: string;
  p: number;
  /** Bar length, 0–100. */
  percent: number;
  text: string;
  predicted: boolean;
  label: boolean;
}

/** A probability as a percentage that never rounds to a misleading 0% or 100%. */
export function formatPercent(p: number): string {
  if (!Number.isFinite(p)) return '–';
  const pct = p * 100;
  if (pct <= 0) return '0%';
  if (pct >= 100) return '100%';
  if (pct < 0.1) return '<0.1%';
  if (pct > 99.9) return '>99.9%';
  return `${pct.toFixed(1)}%`;
}

/**
 * One bar per class in class order; with more than `max` classes, the `max` most probable (the
 * predicted class and the label always among them), in class order, and how many are hidden.
 */
export function probabilityBars(
  probabilities: readonly number[],
  predicted: number,
  label: number | null,
  classes: string[] | null,
  max = 12,
): { bars: ProbabilityBar[]; hidden: number; hiddenMass: number } {
  const all = probabilities.map((p, c) => ({
    cls: c,
    name: className(classes, c),
    p,
    percent: Number.isFinite(p) ? Math.min(100, Math.max(0, p * 100)) : 0,
    text: formatPercent(p),
    predicted: c === predicted,
    label: label !== null && c === label,
  }));
  if (all.length <= max) return { bars: all, hidden: 0, hiddenMass: 0 };
  const keep = new Set<number>();
  for (const b of all) if (b.predicted || b.label) keep.add(b.cls);
  const byP = all.slice().sort((a, b) => b.p - a.p || a.cls - b.cls);
  for (const b of byP) {
    if (keep.size >= max) break;
    keep.add(b.cls);
  }
  const bars = all.filter((b) => keep.has(b.cls));
  const hiddenMass = all.filter((b) => !keep.has(b.cls)).reduce((s, b) => s + (Number.isFinite(b.p) ? b.p : 0), 0);
  return { bars, hidden: all.length - bars.length, hiddenMass };
}

/** "+0.0977 (Newton +0.104)". */
export function lossChangeText(r: Pick<RowView, 'lossChangeIfRemoved' | 'lossChangeIfRemovedNewton'>): {
  first: string;
  newton: string;
} {
  return { first: fmtSigned(r.lossChangeIfRemoved), newton: `Newton ${fmtSigned(r.lossChangeIfRemovedNewton)}` };
}

/** A feature value for the compact table: integers as they are, others with 4 significant digits. */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-4 || a >= 1e6)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

/** The first `max` features as name/value pairs, and how many more there are. */
export function featureEntries(
  names: readonly string[],
  values: readonly number[],
  max = 16,
): { entries: { name: string; value: string }[]; more: number } {
  const shown = Math.min(values.length, max);
  const entries = [];
  for (let i = 0; i < shown; i++) entries.push({ name: names[i] ?? `feature ${i}`, value: formatValue(values[i]) });
  return { entries, more: values.length - shown };
}

/** The last segment of a path, for either separator. */
export function basename(p: string): string {
  const parts = p.split(/[\\/]/).filter((s) => s.length > 0);
  return parts.length ? parts[parts.length - 1] : p;
}

/** Width of a magnitude bar (0–100) for |x| against the largest |value| in its column. */
export function magnitudePercent(x: number, values: readonly number[]): number {
  const m = Math.max(0, ...values.filter(Number.isFinite).map(Math.abs));
  if (!(m > 0) || !Number.isFinite(x)) return 0;
  return Math.min(100, (Math.abs(x) / m) * 100);
}
