/**
 * The panel's channel: typed messages between the extension host and the panel webview, and the
 * view data they carry. No vscode, no DOM: both sides import this file (the webview imports
 * nothing outside src/protocol/ but the engine's type-only src/core/shapes.ts).
 */
import type { ExplainTest, Reason } from '../core/shapes';
import { isRecord, messageGuard } from './message';

export type { Reason } from '../core/shapes';

export type Ranking = 'influence' | 'relative';

/** One training row as the panel lists it. */
export interface RowView {
  row: number;
  line: number;
  label: number;
  predicted: number;
  /** First-order change of the test loss if the row is removed; > 0 means the row helps. */
  lossChangeIfRemoved: number;
  /** Leverage-corrected (Newton) estimate of the same change. */
  lossChangeIfRemovedNewton: number;
  influence: number;
  selfInfluence: number;
  relativeInfluence: number;
  /** First-order change of the test margin if removed; < 0 pushes towards the runner-up class. */
  classificationInfluence: number;
  /** The row's features, for a thumbnail; present when the data are images. */
  features?: number[];
  /** The real image, as a PNG data URI of at most about 64 px, when the row is an image. */
  thumb?: string;
  /** The row's image file, or the Parquet/Arrow file it is a row of (fileRow). */
  file?: string;
  fileRow?: number;
}

/** Where a listed row is beyond its line: its image or Parquet/Arrow file, and its thumbnail. */
export interface RowFile {
  thumb?: string;
  file?: string;
  fileRow?: number;
}

/** A Parquet or Arrow row shown read-only in the panel: its fields and its image. */
export interface RowDetail {
  /** e.g. "Training row 17". */
  title: string;
  file: string;
  fileRow: number;
  fields: { name: string; value: string }[];
  /** The row's image (a larger thumbnail), when it has one. */
  image?: string;
}

export interface ImageShape {
  height: number;
  width: number;
}

/** The head the numbers describe, and how far it is from the optimum of the damped objective. */
export interface HeadView {
  mode: 'shipped' | 'refit';
  /** ‖∇J‖ on θ, and relative to the gradient at θ = 0. */
  gradNorm: number;
  relGradNorm: number;
  /** The head is too far from the optimum for the estimates to describe it. */
  warning: boolean;
  message: string | null;
}

/** Whether the listed rows hold at λ/10 and 10λ (Jaccard overlaps per set). */
export interface StabilityView {
  stable: boolean;
  k: number;
  dampings: [number, number, number];
  overlaps: Record<string, [number, number]>;
}

/** The layers explain takes influence over, as the panel's selector offers them (--layers head, 2, all). */
export type LayerChoice = 'head' | 'last2' | 'all';

export function isLayerChoice(x: unknown): x is LayerChoice {
  return x === 'head' || x === 'last2' || x === 'all';
}

/** The layers a result's influence was taken over, and the model's. */
export interface LayersView {
  choice: LayerChoice;
  /** The model's parameterized layers (Gemm, MatMul, Conv): the selector shows when there are more than one. */
  available: number;
  /** From the output: layer 1 is the head. */
  used: { index: number; name: string; kind: string; parameters: number }[];
  /** Beyond the head: 'exact' Gauss–Newton or 'ekfac' per layer; null for the head's own solver. */
  curvature: 'exact' | 'ekfac' | null;
  /** Scores that are head-only by construction (null in this result). */
  headOnly: string[];
}

/** "Is the head enough here?": the head's ranking of the rows against the deeper layers'. */
export interface AgreementView {
  faithful: boolean;
  /** The badge's words, with ρ and the overlaps. */
  message: string;
  /** Spearman's ρ of the two test-loss changes over every training row (1: the same order). */
  spearman: number;
  k: number;
  /** How many of the k most helpful (harmful) rows both rankings name, out of `of`. */
  helpful: { overlap: number; of: number };
  harmful: { overlap: number; of: number };
  /** The two sides in words, e.g. "the head '/head/Gemm'" and "the last 2 layers ('/head/Gemm', '/fc2/Gemm'; exact Gauss–Newton)". */
  head: string;
  deeper: string;
  damping: number;
  rows: number;
}

/** How far to trust a result: the head's fit, the stability under damping, and the decisions taken on the user's behalf. */
export interface TrustView {
  head: HeadView;
  stability: StabilityView | null;
  /** Signs that the result is probably wrong (e.g. class names in an order that does not fit the model). */
  warnings: string[];
  notes: string[];
}

export interface ExplainView extends TrustView {
  model: { path: string; layer: string; parameters: number; output: 'logits' | 'probabilities' | 'log-probabilities' };
  layers: LayersView;
  /** null: a model with one layer, or the comparison could not run (a note says why). */
  agreement: AgreementView | null;
  classes: string[] | null;
  damping: number;
  dampingRule: string;
  selfInfluenceMethod: 'exact' | 'ekfac';
  train: { path: string; rows: number };
  test: ExplainTest & RowFile;
  /** Thumbnails are drawn when this is set. */
  image: ImageShape | null;
  /** The data are image files (or encoded images): rows carry their real image as `thumb`. */
  images?: boolean;
  /** The image preprocessing, step by step, when the data are images. */
  preprocess?: string[];
  /** Top k by lossChangeIfRemoved (helpful: largest positive; harmful: most negative). */
  byInfluence: { helpful: RowView[]; harmful: RowView[] };
  /** Top k by relativeInfluence (helpful: most negative influence per unit self-influence). */
  byRelative: { helpful: RowView[]; harmful: RowView[] };
  flip: { rows: ({ row: number; line: number } & RowFile)[]; newClass: number } | null;
  /** Distribution of lossChangeIfRemoved over all rows, with the listed rows marked. */
  histogram: {
    edges: number[];
    counts: number[];
    marked: { row: number; line: number; value: number; kind: 'helpful' | 'harmful' }[];
  };
  seconds: number;
}

export interface FlaggedRow {
  row: number;
  line: number;
  label: number;
  predicted: number;
  /** Review-first score, in nats: leave-one-out loss + self-owed fit + held-out harm (README). */
  suspicion: number;
  memorized: boolean;
  reasons: Reason[];
  features?: number[];
  thumb?: string;
  file?: string;
  fileRow?: number;
}

export interface AuditView extends TrustView {
  train: { path: string; rows: number };
  heldOut: { path: string; rows: number; source: 'validation' | 'test'; loss: number; accuracy: number } | null;
  classes: string[] | null;
  image: ImageShape | null;
  /** The data are image files (or encoded images): rows carry their real image as `thumb`. */
  images?: boolean;
  preprocess?: string[];
  damping: number;
  dampingRule: string;
  /** null without a held-out set: memorization is then not checked. */
  memorizedCount: number | null;
  /** Memorized rows first, then the most suspicious, at most k. */
  flagged: FlaggedRow[];
}

/** Everything the panel shows; the host keeps it so the panel restores after a reload. */
export interface PanelState {
  explain: ExplainView | null;
  audit: AuditView | null;
  ranking: Ranking;
}

// ---------------------------------------------------------------------------------------------
// Messages

/** How an export of the cleaned dataset ended, in words for the panel. */
export interface ExportResult {
  ok: boolean;
  message: string;
}

export type HostMessage =
  | { type: 'state'; state: PanelState }
  | { type: 'rowDetail'; detail: RowDetail }
  | { type: 'reply'; requestId: number; ok: boolean; message?: string };

export type WebviewMessage =
  | { type: 'ready' }
  | { type: 'reveal'; file: 'train' | 'test'; row: number; line: number }
  | { type: 'setRanking'; ranking: Ranking }
  | { type: 'setLayers'; layers: LayerChoice }
  | { type: 'runAudit' }
  | { type: 'exportCleaned'; requestId: number };

export function isRanking(r: unknown): r is Ranking {
  return r === 'influence' || r === 'relative';
}

/** The host's check of what the panel sends: the page's messages are input like any other. */
export const isWebviewMessage = messageGuard<WebviewMessage>({
  ready: () => true,
  runAudit: () => true,
  reveal: (m) => (m.file === 'train' || m.file === 'test') && Number.isInteger(m.row) && Number.isInteger(m.line),
  setRanking: (m) => isRanking(m.ranking),
  setLayers: (m) => isLayerChoice(m.layers),
  exportCleaned: (m) => Number.isInteger(m.requestId),
});

/** The panel's light check of what arrives on window 'message' before it trusts its shape. */
export const isHostMessage = messageGuard<HostMessage>({
  state: (m) => isRecord(m.state) && 'explain' in m.state && 'audit' in m.state,
  rowDetail: (m) => isRecord(m.detail) && Array.isArray(m.detail.fields),
  reply: (m) => typeof m.requestId === 'number' && typeof m.ok === 'boolean',
});
