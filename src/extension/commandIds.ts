/**
 * The id of every command the extension contributes. package.json declares exactly these (a unit
 * test checks both ways); the TypeScript names a command only through this module. No vscode.
 */
import type { Role } from './project';

export const COMMAND = {
  useAsModel: 'influenceLens.useAsModel',
  useAsTrain: 'influenceLens.useAsTrain',
  useAsTest: 'influenceLens.useAsTest',
  useAsValidation: 'influenceLens.useAsValidation',
  chooseModel: 'influenceLens.chooseModel',
  chooseTrain: 'influenceLens.chooseTrain',
  chooseTest: 'influenceLens.chooseTest',
  chooseValidation: 'influenceLens.chooseValidation',
  chooseLabelColumn: 'influenceLens.chooseLabelColumn',
  explainRow: 'influenceLens.explainRow',
  explainRowNumber: 'influenceLens.explainRowNumber',
  explainImage: 'influenceLens.explainImage',
  explainWithLayers: 'influenceLens.explainWithLayers',
  runAudit: 'influenceLens.runAudit',
  auditFile: 'influenceLens.auditFile',
  exportCleaned: 'influenceLens.exportCleaned',
  revealLine: 'influenceLens.revealLine',
  revealRow: 'influenceLens.revealRow',
  dropRow: 'influenceLens.dropRow',
  markReviewed: 'influenceLens.markReviewed',
  refresh: 'influenceLens.refresh',
  clearCache: 'influenceLens.clearCache',
  openPanel: 'influenceLens.openPanel',
  cancel: 'influenceLens.cancel',
  showLog: 'influenceLens.showLog',
  openSample: 'influenceLens.openSample',
} as const;

export type CommandId = (typeof COMMAND)[keyof typeof COMMAND];

/** The command that asks for a role's file (the sidebar's project entries run it). */
export const CHOOSE: Record<Role, CommandId> = {
  model: COMMAND.chooseModel,
  train: COMMAND.chooseTrain,
  test: COMMAND.chooseTest,
  validation: COMMAND.chooseValidation,
};
