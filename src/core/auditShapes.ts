/** What audit is asked and what it answers, for the head (audit.ts) and beyond it (auditDeep.ts). */
import type { RowsCache } from './cache/store';
import type { Progress } from './errors';
import type { Warning } from './checks';
import type { DeepCurvatureMethod } from './curvature/ggn';
import type { DampingOption, SelfInfluenceMethod, SolverKind } from './curvature/policy';
import type { TableRead, TableRequest } from './data/choose';
import type { HeadMode, HeadReport } from './headfit';
import type { LayerSpec, LayerSummary } from './model/layers';
import type { RunRows } from './rows';
import type { AuditAgreement } from './scores/auditAgreement';
import type { AuditScores, HeldOut } from './scores/audit';
import type { Stability } from './scores/stability';
import type { ImageRequest } from './sources';

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
  /** The layers whose parameters the audit is taken over (default: the head). */
  layers?: LayerSpec;
  /** Beyond the head: the exact damped GGN, or EK-FAC per layer (default: exact up to 5,000 parameters). */
  curvature?: DeepCurvatureMethod;
  /**
   * With the head: also audit the last 2 layers and report how far the two agree. By default
   * (undefined) when that costs little (audit.ts AGREEMENT_BUDGET); true: whatever it costs; false:
   * never. Null with a note when it is not run or the model's layers do not allow it.
   */
  agreement?: boolean;
  cache?: RowsCache | null;
  signal?: AbortSignal;
  onProgress?: Progress;
}

export interface AuditResult {
  rows: RunRows;
  heldOut: (HeldOut & { rows: RunRows }) | null;
  damping: number;
  /** λ on the rows' effective head (differs from damping only for logits scale·z). */
  effectiveDamping: number;
  dampingRule: string;
  impliedL2: { lambda: number; residual: number } | null;
  head: HeadReport;
  stability: Stability | null;
  /** The layers the audit is taken over (the head alone by default), from the output. */
  layers: LayerSummary[];
  /** Beyond the head, the curvature used; null for the head's own policy. */
  curvature: DeepCurvatureMethod | null;
  /** Per-row scores that only the head's closed form gives, NaN (null in the JSON) beyond the head. */
  headOnly: string[];
  /** With the head: how far its suspicion ranking and memorized flags agree with the last 2 layers'. */
  agreement: AuditAgreement | null;
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
