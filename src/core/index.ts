/** The engine's public API: what the CLI, the extension's engine process and the bench import. */
export {
  CancelledError,
  InfluenceError,
  throwIfAborted,
  type ErrorCode,
  type ErrorPlace,
  type Progress,
} from './errors';
export { explain } from './explain';
export type { ExplainRequest, ExplainResult, Verified } from './explainShapes';
export { modelSummary, type ModelSummary } from './model/summary';
export type { ExplainTest } from './shapes';
export { audit, type AuditRequest, type AuditResult } from './audit';
export { clean, type CleanRequest, type CleanResult, type RemoveSpec } from './clean';
export { Engine } from './model/engine';
export { parseLayerSpec, type LayerSpec } from './model/layers';
export type { LayerSummary } from './model/layers';
export type { DeepCurvatureMethod } from './curvature/ggn';
export type { OutputKind } from './model/head';
export { RowsCache } from './cache/store';
export { defaultCacheDir } from './cache/keys';
export type { CacheUse } from './rows';
export type { DampingOption, SelfInfluenceMethod, SolverKind } from './curvature/policy';
export type { HeadMode, HeadReport } from './headfit';
export type { Stability } from './scores/stability';
export type { Agreement, AgreementSide, TopOverlap } from './scores/agreement';
export type { AuditAgreement } from './scores/auditAgreement';
export { readHeader, TableReader, type TableOptions } from './data/table';
export { guessLabelColumn, type ClassesFrom, type TableChoice, type TableRead, type TableRequest } from './data/choose';
export type { ClassOrderWarning, LowAccuracyWarning, NonFiniteWarning, Warning } from './checks';
export { readRecords, rowAtLine } from './data/records';
export { quantile, reasonsFor, type AuditScores, type Reason } from './scores/audit';
export type { ExplainScores } from './scores/explain';
export type { FlipSet } from './scores/flip';
export { heldOutChangeIfRemoved, suspicionOrder, topRows } from './scores/ranking';
export { parsePreprocess, type PreprocessConfig, type Pipeline } from './data/images/preprocess';
export type { RowLocator } from './data/locator';
export {
  forwardSourceRow,
  isTable,
  readSourceRows,
  sourceColumns,
  type ImageRequest,
  type PreprocessSummary,
  type SourceRow,
} from './sources';
export { chooseSource, type SourceChoice } from './data/chooseSource';
export { sourceKind, type SourceKind } from './data/source';
export { rowDetail, rowFiles, type RowFileInfo } from './data/rowfiles';
export { fileThumbnail } from './data/images/thumbnail';
export { listImages } from './data/source';
