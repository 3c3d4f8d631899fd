/**
 * Result shapes that the panel shows as they are: declared once here, type-only and import-free,
 * so that the host↔panel protocol (src/protocol/webview.ts) can name them without the engine.
 */

/** The test row as explained: where it is, its label and prediction, and its features. */
export interface ExplainTest {
  path: string;
  row: number;
  line: number;
  label: number;
  /** False when the test file has no label column: the prediction is explained for its predicted class. */
  labelled: boolean;
  predicted: number;
  probabilities: number[];
  loss: number;
  margin: number;
  runnerUp: number;
  features: number[];
  /** The feature columns of the test file, in model order. */
  featureNames: string[];
  /** An image row's file (or a Parquet/Arrow row's file and row in it). */
  file?: string;
  fileRow?: number;
}

/** Why a training row is flagged; machine-readable (the CLI and the extension word it). */
export type Reason =
  | { code: 'LABEL_DISAGREES'; predicted: number; p: number }
  | { code: 'SELF_FLIP'; margin: number; marginWithout: number; predictedWithout: number }
  | { code: 'HARMS_HELD_OUT'; heldOutLossChangeIfRemoved: number }
  | { code: 'HIGH_SELF_INFLUENCE'; selfInfluence: number; percentile: number }
  | { code: 'LOO_LOSS'; loss: number; lossWithout: number }
  /** Beyond the head: the first-order leave-one-out loss (loss + selfInfluence/n) passes ln 2. */
  | { code: 'SELF_FLIP_FIRST_ORDER'; loss: number; lossWithout: number };
