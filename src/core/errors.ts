/**
 * User-facing errors. Every bad input becomes an InfluenceError with a stable CODE
 * (the extension picks a fix action from it) and, where known, the place: a file
 * position or a model node. The CLI prints `error[CODE] place: message` and exits 2.
 */

export type ErrorCode =
  // files
  | 'FILE_NOT_FOUND'
  | 'FILE_UNREADABLE'
  | 'FILE_CHANGED'
  | 'UNSUPPORTED_FORMAT'
  // tables
  | 'EMPTY_FILE'
  | 'NO_ROWS'
  | 'CSV_RAGGED_ROW'
  | 'CSV_BAD_QUOTE'
  | 'CSV_UNTERMINATED_QUOTE'
  | 'CSV_DUPLICATE_COLUMN'
  | 'JSONL_PARSE'
  | 'JSONL_NOT_OBJECT'
  | 'JSONL_KEYS_DIFFER'
  | 'LABEL_COLUMN_MISSING'
  | 'FEATURE_COLUMN_MISSING'
  | 'FEATURE_NOT_NUMERIC'
  | 'FEATURE_NOT_FINITE'
  | 'FEATURE_SHAPE'
  | 'LABEL_INVALID'
  | 'LABEL_OUT_OF_RANGE'
  | 'LABEL_UNKNOWN_CLASS'
  | 'ROW_OUT_OF_RANGE'
  // images, manifests, Parquet and Arrow
  | 'IMAGE_NOT_FOUND'
  | 'IMAGE_CORRUPT'
  | 'IMAGE_UNSUPPORTED'
  | 'IMAGE_SIZE_MISMATCH'
  | 'IMAGE_COLUMN_MISSING'
  | 'NO_USABLE_COLUMN'
  | 'PARQUET_INVALID'
  | 'ARROW_INVALID'
  | 'PREPROCESS_INVALID'
  // models
  | 'MODEL_INVALID'
  | 'MODEL_INPUT'
  | 'MODEL_OUTPUT'
  | 'NO_LINEAR_HEAD'
  | 'UNSUPPORTED_OP'
  | 'FEATURE_COUNT_MISMATCH'
  | 'CLASS_COUNT_MISMATCH'
  | 'MODEL_NOT_FINITE'
  | 'MODEL_RUN_FAILED'
  // options
  | 'BAD_OPTION';

export interface ErrorPlace {
  file?: string;
  /** 1-based line. */
  line?: number;
  /** 1-based column (characters within the line). */
  col?: number;
  /** ONNX node name, for model errors. */
  node?: string;
}

export class InfluenceError extends Error {
  readonly code: ErrorCode;
  readonly place: ErrorPlace;

  constructor(code: ErrorCode, message: string, place: ErrorPlace = {}) {
    super(message);
    this.name = 'InfluenceError';
    this.code = code;
    this.place = place;
  }

  /** `error[CODE] file:line:col: message`, or the node in place of the position. */
  format(): string {
    const { file, line, col, node } = this.place;
    let where = '';
    if (file !== undefined) {
      where = file;
      if (line !== undefined) where += `:${line}` + (col !== undefined ? `:${col}` : '');
      if (node !== undefined) where += ` (node ${node})`;
    } else if (node !== undefined) {
      where = `node ${node}`;
    }
    return `error[${this.code}]${where ? ' ' + where : ''}: ${this.message}`;
  }
}

/** Thrown when an AbortSignal fires; the CLI exits 130 on it. */
export class CancelledError extends Error {
  constructor() {
    super('cancelled');
    this.name = 'CancelledError';
  }
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new CancelledError();
}

/** Progress callback shared by every long-running core function. */
export type Progress = (stage: string, done: number, total: number) => void;
