/** The action an error notification offers, chosen by the engine error's CODE (pure, no vscode). */
import { COMMAND } from './commandIds';

/** Which fix a notification offers for an error CODE. */
export function fixFor(code: string): { title: string; command: string; args?: unknown[] } | null {
  switch (code) {
    case 'LABEL_COLUMN_MISSING':
    case 'LABEL_INVALID':
    case 'LABEL_UNKNOWN_CLASS':
      return { title: 'Choose Label Column…', command: COMMAND.chooseLabelColumn };
    case 'FEATURE_COUNT_MISMATCH':
    case 'FEATURE_COLUMN_MISSING':
    case 'NO_LINEAR_HEAD':
    case 'UNSUPPORTED_OP':
    case 'MODEL_INVALID':
    case 'MODEL_INPUT':
    case 'MODEL_OUTPUT':
    case 'MODEL_NOT_FINITE':
    case 'CLASS_COUNT_MISMATCH':
      return { title: 'Choose Model…', command: COMMAND.chooseModel };
    case 'NO_ROWS':
    case 'EMPTY_FILE':
    case 'UNSUPPORTED_FORMAT':
      return { title: 'Choose Training Data…', command: COMMAND.chooseTrain };
    case 'BAD_OPTION':
      return { title: 'Open Settings', command: 'workbench.action.openSettings', args: ['influenceLens'] };
    case 'ENGINE_CRASHED':
    case 'INTERNAL':
      return { title: 'Show Log', command: COMMAND.showLog };
    default:
      return null;
  }
}
