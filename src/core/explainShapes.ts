/** What explain is asked and what it answers, for the head (explain.ts) and beyond it (explainDeep.ts). */
import type { RowsCache } from './cache/store';
import type { Warning } from './checks';
import type { DampingOption, SelfInfluenceMethod, SolverKind } from './curvature/policy';
import type { DeepCurvatureMethod } from './curvature/ggn';
import type { TableRead, TableRequest } from './data/choose';
import type { RowLocator } from './data/locator';
import type { Progress } from './errors';
import type { HeadMode, HeadReport } from './headfit';
import type { LayerSpec, LayerSummary } from './model/layers';
import type { ModelSummary } from './model/summary';
import type { CacheUse } from './rows';
import type { ExplainScores } from './scores/explain';
import type { Agreement } from './scores/agreement';
import type { Stability } from './scores/stability';
import type { ExplainTest } from './shapes';
import type { ImageRequest, PreprocessSummary } from './sources';

export interface ExplainRequest {
  model: string;
  /** The graph output to explain (default: the logits behind the final linear layer). */
  output?: string;
  train: string;
  test: string;
  testRow: number;
  table?: TableRequest;
  /** Image sources: the image column and the preprocessing from settings or flags. */
  images?: ImageRequest;
  damping?: DampingOption;
  /** Score the head as given (default) or refit to the optimum of the damped objective. */
  head?: HeadMode;
  /** Compare the top rows at λ/10 and 10λ (default true), over the top `stabilityTop` (default 10). */
  stability?: boolean;
  stabilityTop?: number;
  solver?: SolverKind;
  selfInfluence?: SelfInfluenceMethod;
  batchSize?: number;
  /** Refit without each of the top K helpful and top K harmful rows and report the actual change. */
  verifyTop?: number;
  /** The layers whose parameters influence is taken over (default: the head). */
  layers?: LayerSpec;
  /**
   * Also explain on the other side (the last 2 layers for the head, the head for deeper layers) and
   * compare the rankings. Default (undefined): on tables only; true: on any source; false: never.
   * Needs a model with more than one layer.
   */
  agreement?: boolean;
  /** Beyond the head: the exact damped GGN, or (default) EK-FAC per layer; with the head, 'exact' forces the exact path. */
  curvature?: DeepCurvatureMethod;
  cache?: RowsCache | null;
  signal?: AbortSignal;
  onProgress?: Progress;
}

export interface ExplainResult {
  version: 1;
  model: ModelSummary;
  /** The layers the influence is taken over (the head alone by default), from the output. */
  layers: LayerSummary[];
  /** Beyond the head, the curvature used ('exact' GGN or 'ekfac'); null for the head's own policy. */
  curvature: DeepCurvatureMethod | null;
  /** Scores that only the head's closed form gives, reported as null beyond the head (empty for the head). */
  headOnly: string[];
  classes: string[] | null;
  /** The training file's label column (guessed when it has no `label` column; a note says so); null for an image folder, whose labels are its class folders. */
  labelColumn: string | null;
  damping: number;
  dampingRule: string;
  /** The L2 the shipped head's gradient implies and its stationarity residual, when the damping rule looked at it. */
  impliedL2: { lambda: number; residual: number } | null;
  /** The head the scores describe: shipped or refit, and how far from the optimum of the damped objective. */
  head: HeadReport;
  /** Whether the top rows hold at λ/10 and 10λ. */
  stability: Stability | null;
  solver: SolverKind | 'ekfac';
  selfInfluenceMethod: SelfInfluenceMethod;
  cgIterations: number | null;
  train: { path: string; rows: number; cache: CacheUse; kind?: string; read?: number };
  test: ExplainTest;
  /** The image preprocessing used, when the data are images. */
  preprocess?: PreprocessSummary;
  /** What the tool decided on the user's behalf (the output explained, a label column guessed, ...), in words. */
  notes: string[];
  /** Signs that the result is probably wrong (a class order that does not fit, non-finite scores). */
  warnings: Warning[];
  /** How the training and test files were read. */
  tables: { train: TableRead; test: TableRead };
  /** Per training row, in file order. */
  rows: {
    line: Int32Array;
    label: Int32Array;
    predicted: Int32Array;
    loss: Float64Array;
    offsets: Float64Array;
    locator?: RowLocator;
  };
  scores: ExplainScores;
  verified: Verified | null;
  /** The head's ranking against the deeper layers' (null: one layer, turned off, or a note says why). */
  agreement: Agreement | null;
  seconds: Record<string, number>;
}

/** Actual leave-one-out refits (exact, ‖∇J‖ ≤ 1e-10) beside the estimates, for the listed rows. */
export interface Verified {
  /** ‖∇J‖ of the full-data refit that the changes are measured from. */
  gradNorm: number;
  testLossAtOptimum: number;
  rows: {
    row: number;
    lossChangeIfRemoved: number;
    lossChangeIfRemovedNewton: number;
    actualLossChangeIfRemoved: number;
  }[];
}
