/** The engine's public API: what the CLI, the extension's engine process and the bench import. */
export { CancelledError, InfluenceError, throwIfAborted, type ErrorCode, type ErrorPlace, type Progress } from './errors';
export { explain, modelSummary, type ExplainRequest, type ExplainResult, type ExplainTest, type ModelSummary, type Verified } from './explain';
export { audit, type AuditRequest, type AuditResult } from './audit';
export { clean, type CleanRequest, type CleanResult, type RemoveSpec } from './clean';
export { Engine } from './model/engine';
export type { OutputKind } from './model/head';
export { RowsCache } from './cache/store';
export { defaultCacheDir } from './cache/keys';
export type { CacheUse } from './rows';
export type { SelfInfluenceMethod, SolverKind } from './curvature/policy';
export { readHeader, TableReader, type TableOptions } from './data/table';
export { type TableChoice, type TableRead, type TableRequest } from './data/choose';
export type { ClassOrderWarning, LowAccuracyWarning, NonFiniteWarning, Warning } from './checks';
export { readRecords } from './data/records';
export { quantile, reasonsFor, type AuditScores, type Reason } from './scores/audit';
export type { ExplainScores } from './scores/explain';
export type { FlipSet } from './scores/flip';
export { heldOutChangeIfRemoved, suspicionOrder, topRows } from './scores/ranking';
