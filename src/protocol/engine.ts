/** The engine's channel: messages between the extension host and the engine's child process (no vscode). */
import type { AuditView, ExplainView, LayerChoice, RowDetail } from './webview';

export interface TableChoice {
  labelColumn?: string;
  features?: string[];
  classes?: string[];
}

export interface CommonParams {
  model: string;
  train: string;
  table: TableChoice;
  damping: number | 'auto' | 'trace' | 'implied';
  head: 'shipped' | 'refit';
  /** Rows listed per table. */
  topK: number;
  /** 'auto', 'none' or 'HxW'. */
  imageShape: string;
  /** null: no cache. */
  cacheDir: string | null;
  batchSize: number;
  /** Image sources: a manifest's path column or a Parquet/Arrow image column, and the preprocessing from the settings. */
  images?: ImageParams;
}

export interface ImageParams {
  imageColumn?: string;
  preprocess?: Record<string, unknown>;
}

export interface ExplainParams extends CommonParams {
  test: string;
  testRow: number;
  /** Default: the head. */
  layers?: LayerChoice;
}

export interface AuditParams extends CommonParams {
  heldOut: { path: string; source: 'validation' | 'test' } | null;
  tau: number;
}

export interface CleanParams extends AuditParams {
  remove: number[];
  out: string;
}

/** One decorated/diagnosed training row. */
export interface RowMark {
  row: number;
  line: number;
  kind: 'helpful' | 'harmful' | 'memorized' | 'suspicious';
  /** Words for the hover and the Problems panel. */
  message: string;
  value: number;
  /** The row's image (or Parquet/Arrow) file: an image folder's diagnostics attach to it. */
  file?: string;
  /** The row's image, for the hover. */
  thumb?: string;
}

export interface RunLog {
  damping: number;
  dampingRule: string;
  seconds: Record<string, number>;
  cache: string;
}

export interface Requests {
  explain: { params: ExplainParams; result: { view: ExplainView; marks: RowMark[]; log: RunLog } };
  audit: { params: AuditParams; result: { view: AuditView; marks: RowMark[]; log: RunLog } };
  clean: {
    params: CleanParams;
    result: { kept: number; removed: number[]; out: string; predictedHeldOutLossChange: number };
  };
  /** The columns, and the label column the engine's rules would take (null: none, or several could be it). */
  header: { params: { path: string }; result: { columns: string[]; labelGuess: string | null } };
  /** The 0-based data row whose record covers a 1-based line, or null (header, blank). */
  rowAt: { params: { path: string; line: number; table: TableChoice }; result: { row: number; line: number } | null };
  clearCache: { params: { cacheDir: string | null }; result: { removed: number } };
  /** A Parquet or Arrow row's fields and image, for the panel's row view. */
  rowDetail: { params: { file: string; fileRow: number; title: string }; result: RowDetail };
}

export type Method = keyof Requests;

export type ToWorker = { id: number; method: Method; params: unknown } | { cancel: number };

export interface WorkerError {
  /** An InfluenceError CODE, 'CANCELLED' or 'INTERNAL'. */
  code: string;
  message: string;
  /** `error[CODE] place: message`. */
  formatted: string;
  file?: string;
  line?: number;
  col?: number;
}

export type FromWorker =
  | { id: number; result: unknown }
  | { id: number; error: WorkerError }
  | { id: number; progress: { stage: string; done: number; total: number } };
