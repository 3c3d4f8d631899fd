/** Every command, each built by a factory over the shared services (rust-analyzer's pattern). */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { isLayerChoice, type ExportResult, type LayerChoice } from '../protocol/webview';
import { COMMAND, type CommandId } from './commandIds';
import type { Controller } from './controller';
import { isDataFile, type EditorIntegration, type RowSets } from './editor';
import type { PanelController } from './panel';
import { ROLE_NAMES, type Role } from './project';

export interface Services {
  ctx: vscode.ExtensionContext;
  controller: Controller;
  panel: PanelController;
  editor: EditorIntegration;
  sets: RowSets;
}

type Factory = (s: Services) => (...args: never[]) => unknown;

const DATA_GLOB = '**/*.{csv,tsv,jsonl,parquet,arrow,feather}';

/** Image files "Explain This Image's Prediction" takes. */
export function isImageFile(p: string): boolean {
  return /\.(png|jpe?g|bmp|webp)$/i.test(p);
}

async function pickFile(role: Role): Promise<string | undefined> {
  const glob = role === 'model' ? '**/*.onnx' : DATA_GLOB;
  const found = await vscode.workspace.findFiles(glob, '**/{node_modules,.git}/**', 200);
  const browse = '$(folder-opened) Browse…';
  const items = [
    ...found.map((u) => ({ label: vscode.workspace.asRelativePath(u), uri: u })),
    { label: browse, uri: undefined },
  ];
  const folder = '$(file-directory) An image folder…';
  if (role !== 'model') items.splice(items.length - 1, 0, { label: folder, uri: undefined });
  const pick = await vscode.window.showQuickPick(items, {
    title: `Influence Lens: choose the ${ROLE_NAMES[role].toLowerCase()}`,
    placeHolder:
      role === 'model' ? 'an .onnx classifier' : 'a CSV, TSV, JSONL, Parquet or Arrow file, or an image folder',
  });
  if (!pick) return undefined;
  if (pick.uri) return pick.uri.fsPath;
  const folders = pick.label === folder;
  const uris = await vscode.window.showOpenDialog({
    canSelectMany: false,
    canSelectFolders: folders,
    canSelectFiles: !folders,
    filters: folders
      ? undefined
      : role === 'model'
        ? { 'ONNX model': ['onnx'] }
        : { Data: ['csv', 'tsv', 'jsonl', 'parquet', 'arrow', 'feather'] },
  });
  return uris?.[0]?.fsPath;
}

/** Makes sure the model and training data are chosen, asking for what is missing. */
async function ensure(s: Services, roles: Role[]): Promise<boolean> {
  for (const role of roles) {
    const p = s.controller.path(role);
    if (p) continue;
    const chosen = await pickFile(role);
    if (!chosen) return false;
    await s.controller.project.update({ [role]: chosen });
    // A text table's label column is asked for; an image folder's labels are its folders.
    if (role === 'train' && !s.controller.project.get().labelColumn && isDataFile(vscode.Uri.file(chosen)))
      await chooseLabelColumn(s)();
  }
  return true;
}

const useAs =
  (role: Role): Factory =>
  (s) =>
  async (uri?: vscode.Uri) => {
    const file = uri?.fsPath ?? (await pickFile(role));
    if (!file) return;
    await s.controller.project.update({ [role]: file });
    void vscode.window.setStatusBarMessage(
      `Influence Lens: ${ROLE_NAMES[role].toLowerCase()} is ${vscode.workspace.asRelativePath(file)}`,
      4000,
    );
  };

const choose =
  (role: Role): Factory =>
  (s) =>
  async () => {
    const file = await pickFile(role);
    if (file) await s.controller.project.update({ [role]: file });
  };

const chooseLabelColumn: Factory = (s) => async () => {
  const train = s.controller.path('train');
  if (!train) {
    void vscode.window.showWarningMessage('Influence Lens: choose the training data first.');
    return;
  }
  let header: { columns: string[]; labelGuess: string | null };
  try {
    header = await s.controller.engine.request('header', { path: train });
  } catch (e) {
    s.controller.showError(e);
    return;
  }
  // With no choice yet, the engine's rules propose one (label, else target, class, y or labels): confirm it.
  const chosen = s.controller.project.get().labelColumn;
  const current = chosen ?? header.labelGuess ?? 'label';
  const guessed = chosen === undefined && header.labelGuess !== null && header.labelGuess !== 'label';
  const items = header.columns.map((c) => ({
    label: c,
    description:
      c === current ? (guessed ? 'guessed: press Enter to confirm' : 'current') : c === 'label' ? 'default' : undefined,
    picked: c === current,
  }));
  items.sort((a, b) => Number(b.label === current) - Number(a.label === current));
  const title = guessed
    ? `Influence Lens: confirm the label column of ${path.basename(train)}`
    : `Influence Lens: label column of ${path.basename(train)}`;
  const pick = await vscode.window.showQuickPick(items, {
    title,
    placeHolder: 'The column holding the class of each row',
  });
  if (pick) await s.controller.project.update({ labelColumn: pick.label });
};

/** Explains the row under the cursor (or at `line` of `uri`) as the test prediction. */
const explainRow: Factory = (s) => async (uri?: vscode.Uri, line?: number) => {
  const editor = vscode.window.activeTextEditor;
  const target = uri instanceof vscode.Uri ? uri : editor?.document.uri;
  if (!target || !isDataFile(target)) {
    void vscode.window.showWarningMessage(
      'Influence Lens: open a test or training data file and put the cursor on a row to explain its prediction.',
    );
    return;
  }
  const ln = typeof line === 'number' ? line : (editor?.selection.active.line ?? 0) + 1;
  if (!(await ensure(s, ['model', 'train']))) return;
  const c = s.controller;
  let rowAt: { row: number; line: number } | null;
  try {
    rowAt = await c.engine.request('rowAt', { path: target.fsPath, line: ln, table: c.table() });
  } catch (e) {
    c.showError(e);
    return;
  }
  if (!rowAt) {
    void vscode.window.showWarningMessage(`Influence Lens: line ${ln} is the header, not a data row.`);
    return;
  }
  await runExplain(s, target.fsPath, rowAt.row);
};

/** Explains a test row over `layers`, by default those of the last explain of the same model and data (the panel's selector). */
async function runExplain(s: Services, testPath: string, testRow: number, layers?: LayerChoice): Promise<void> {
  const c = s.controller;
  const model = c.path('model')!;
  const train = c.path('train')!;
  const last = c.results.explain;
  layers ??= last && last.modelPath === model && last.trainPath === train ? last.view.layers.choice : undefined;
  // A single image is explained on its own: it does not become the project's test data.
  if (!c.project.roleOf(testPath) && path.resolve(testPath) !== path.resolve(train) && !isImageFile(testPath))
    await c.project.update({ test: testPath });
  const params = { ...c.common(model, train), test: testPath, testRow, ...(layers ? { layers } : {}) };
  const r = await c.run(`explaining row ${testRow} of ${path.basename(testPath)}`, (signal, onProgress) =>
    c.engine.request('explain', params, { signal, onProgress }),
  );
  if (!r) return;
  c.logRun(`explain row ${testRow} of ${testPath}`, r.log);
  c.setExplain({ view: r.view, marks: r.marks, modelPath: model, trainPath: train, testPath, testRow });
  s.panel.show(true);
}

const LAYER_PICKS: { label: string; choice: LayerChoice; description: string }[] = [
  { label: 'Head', choice: 'head', description: 'the final linear layer (exact, leverage-corrected estimates)' },
  { label: 'Last 2', choice: 'last2', description: 'the head and the layer before it' },
  { label: 'All', choice: 'all', description: 'every parameterized layer' },
];

/** Explains the current test row again over other layers (the panel's layer selector). */
const explainWithLayers: Factory = (s) => async (layers?: LayerChoice) => {
  const ex = s.controller.results.explain;
  if (!ex) {
    void vscode.window.showWarningMessage('Influence Lens: explain a row first; then choose the layers.');
    return;
  }
  let choice = isLayerChoice(layers) ? layers : undefined;
  if (!choice) {
    const pick = await vscode.window.showQuickPick(
      LAYER_PICKS.map((p) => ({ ...p, picked: p.choice === ex.view.layers.choice })),
      { title: 'Influence Lens: the layers influence is taken over' },
    );
    if (!pick) return;
    choice = pick.choice;
  }
  if (!(await ensure(s, ['model', 'train']))) return;
  await runExplain(s, ex.testPath, ex.testRow, choice);
};

/** Explains an image file that sits in no data file (unlabelled: its predicted class). */
const explainImage: Factory = (s) => async (uri?: vscode.Uri) => {
  const target =
    uri instanceof vscode.Uri
      ? uri
      : (vscode.window.tabGroups.activeTabGroup.activeTab?.input as { uri?: vscode.Uri } | undefined)?.uri;
  if (!target || target.scheme !== 'file' || !isImageFile(target.fsPath)) {
    void vscode.window.showWarningMessage(
      'Influence Lens: right-click a PNG, JPEG, BMP or WebP image to explain its prediction.',
    );
    return;
  }
  if (!(await ensure(s, ['model', 'train']))) return;
  await runExplain(s, target.fsPath, 0);
};

/** A listed row as the panel and the tree know it. */
interface ListedRow {
  row: number;
  line: number;
  file?: string;
  fileRow?: number;
}

/** The listed row `row` of the training (or the test) data in the current results. */
function listedRow(s: Services, which: 'train' | 'test', row: number): ListedRow | undefined {
  const ex = s.controller.results.explain?.view;
  if (which === 'test') return ex && ex.test.row === row ? ex.test : undefined;
  const lists: ListedRow[][] = [];
  if (ex)
    lists.push(
      ex.byInfluence.helpful,
      ex.byInfluence.harmful,
      ex.byRelative.helpful,
      ex.byRelative.harmful,
      ex.flip?.rows ?? [],
    );
  const au = s.controller.results.audit?.view;
  if (au) lists.push(au.flagged);
  for (const l of lists) {
    const hit = l.find((r) => r.row === row);
    if (hit) return hit;
  }
  return undefined;
}

/**
 * Opens a listed row: a line of a text file at that line; an image in VS Code's image preview
 * (after revealing its manifest line, when there is one); a Parquet/Arrow row as a read-only view
 * in the panel with its fields and image.
 */
const revealRow: Factory = (s) => async (which: 'train' | 'test', row: number, line?: number) => {
  const c = s.controller;
  const ex = c.results.explain;
  const dataPath = which === 'test' ? ex?.testPath : (ex?.trainPath ?? c.results.audit?.trainPath);
  const r = listedRow(s, which, row) ?? (typeof line === 'number' ? { row, line } : undefined);
  if (!r || !dataPath) return;
  if (r.file !== undefined && r.fileRow !== undefined) {
    const title = `${which === 'test' ? 'Test' : 'Training'} row ${row}`;
    try {
      const detail = await c.engine.request('rowDetail', { file: r.file, fileRow: r.fileRow, title });
      s.panel.show(true);
      s.panel.post({ type: 'rowDetail', detail });
    } catch (e) {
      c.showError(e);
    }
    return;
  }
  if (r.line > 0) await s.editor.reveal(vscode.Uri.file(dataPath), r.line);
  if (r.file !== undefined)
    await vscode.commands.executeCommand('vscode.open', vscode.Uri.file(r.file), {
      viewColumn: vscode.ViewColumn.One,
      preview: true,
    });
};

const explainRowNumber: Factory = (s) => async (row?: number) => {
  if (!(await ensure(s, ['model', 'train', 'test']))) return;
  let k = typeof row === 'number' ? row : undefined;
  if (k === undefined) {
    const text = await vscode.window.showInputBox({
      title: 'Influence Lens: explain a test row',
      prompt: `0-based data row of ${path.basename(s.controller.path('test')!)} (the header is not a row)`,
      validateInput: (v) => (/^\d+$/.test(v.trim()) ? undefined : 'a row number: 0, 1, 2, …'),
    });
    if (text === undefined) return;
    k = Number(text.trim());
  }
  await runExplain(s, s.controller.path('test')!, k);
};

const runAudit: Factory = (s) => async () => {
  if (!(await ensure(s, ['model', 'train']))) return;
  const c = s.controller;
  const model = c.path('model')!;
  const train = c.path('train')!;
  const validation = c.path('validation');
  const test = c.path('test');
  const heldOut = validation
    ? { path: validation, source: 'validation' as const }
    : test && path.resolve(test) !== path.resolve(train)
      ? { path: test, source: 'test' as const }
      : null;
  const r = await c.run(`auditing ${path.basename(train)}`, (signal, onProgress) =>
    c.engine.request(
      'audit',
      { ...c.common(model, train), heldOut, tau: c.settings().memorizationTau },
      { signal, onProgress },
    ),
  );
  if (!r) return;
  c.logRun(`audit of ${train}`, r.log);
  c.setAudit({ view: r.view, marks: r.marks, trainPath: train });
  s.panel.show(true);
  const mem = r.view.memorizedCount;
  void vscode.window.setStatusBarMessage(
    `Influence Lens: audit done${mem !== null ? `, ${mem} memorized rows` : ''}`,
    5000,
  );
};

const auditFile: Factory = (s) => async (uri?: vscode.Uri) => {
  if (uri) await s.controller.project.update({ train: uri.fsPath });
  await runAudit(s)();
};

/** Writes a new data file without the memorized and dropped rows; never the original. */
const exportCleaned: Factory = (s) => async (): Promise<ExportResult | undefined> => {
  const c = s.controller;
  const au = c.results.audit;
  if (!au) {
    void vscode.window.showWarningMessage('Influence Lens: run an audit first; the export drops the rows it flags.');
    return undefined;
  }
  const reviewed = s.sets.get('reviewed', au.trainPath);
  const dropped = s.sets.get('dropped', au.trainPath);
  const memorized = au.view.flagged.filter((f) => f.memorized && !reviewed.has(f.row)).map((f) => f.row);
  const options = [
    {
      label: `Memorized rows and rows you dropped (${new Set([...memorized, ...dropped]).size})`,
      rows: [...new Set([...memorized, ...dropped])],
    },
    { label: `Memorized rows (${memorized.length})`, rows: memorized },
    { label: `Rows you dropped from the Problems panel (${dropped.size})`, rows: [...dropped] },
  ].filter((o) => o.rows.length > 0);
  if (!options.length) {
    void vscode.window.showInformationMessage('Influence Lens: no memorized or dropped rows to remove.');
    return { ok: false, message: 'No memorized or dropped rows to remove.' };
  }
  const pick =
    options.length === 1
      ? options[0]
      : await vscode.window.showQuickPick(options, {
          title: 'Influence Lens: rows to leave out of the cleaned dataset',
        });
  if (!pick) return undefined;
  // Image data are exported as a new manifest of the kept images (the images are never touched).
  const text = isDataFile(vscode.Uri.file(au.trainPath));
  const ext = text ? path.extname(au.trainPath) : '.csv';
  const suggestion = vscode.Uri.file(
    path.join(path.dirname(au.trainPath), `${path.basename(au.trainPath, path.extname(au.trainPath))}.cleaned${ext}`),
  );
  const out = await vscode.window.showSaveDialog({
    defaultUri: suggestion,
    title: text ? 'Save the cleaned dataset as' : 'Save a manifest of the kept images as',
    filters: { Data: [ext.slice(1)] },
  });
  if (!out) return undefined;
  if (path.resolve(out.fsPath) === path.resolve(au.trainPath)) {
    void vscode.window.showErrorMessage(
      'Influence Lens: the cleaned dataset never overwrites the original; choose another file.',
    );
    return { ok: false, message: 'Choose a file other than the original.' };
  }
  const validation = c.path('validation');
  const r = await c.run('writing the cleaned dataset', (signal, onProgress) =>
    c.engine.request(
      'clean',
      {
        ...c.common(c.path('model')!, au.trainPath),
        heldOut: validation ? { path: validation, source: 'validation' } : null,
        tau: c.settings().memorizationTau,
        remove: pick.rows.sort((a, b) => a - b),
        out: out.fsPath,
      },
      { signal, onProgress },
    ),
  );
  if (!r) return { ok: false, message: c.lastError?.message ?? 'Export cancelled.' };
  const message = `Wrote ${vscode.workspace.asRelativePath(r.out)}: ${r.kept} rows kept, ${r.removed.length} removed; predicted change of the mean held-out loss ${r.predictedHeldOutLossChange.toPrecision(3)} (first-order).`;
  c.log(message);
  void vscode.window
    .showInformationMessage(`Influence Lens: ${message}`, 'Open')
    .then((a) => a && vscode.window.showTextDocument(out));
  return { ok: true, message };
};

const revealLine: Factory = (s) => async (uri: vscode.Uri, line: number, col?: number) =>
  s.editor.reveal(uri, line, col);

const rowSet =
  (kind: 'reviewed' | 'dropped'): Factory =>
  (s) =>
  async (file: string, row: number) => {
    await s.sets.add(kind, file, row);
    s.editor.refresh();
    void vscode.window.setStatusBarMessage(
      `Influence Lens: row ${row} ${kind === 'reviewed' ? 'marked as reviewed' : 'will be left out of the cleaned export'}`,
      4000,
    );
  };

const refresh: Factory = (s) => async () => {
  const ex = s.controller.results.explain;
  if (ex) await runExplain(s, ex.testPath, ex.testRow, ex.view.layers.choice);
  if (s.controller.results.audit) await runAudit(s)();
};

const clearCache: Factory = (s) => async () => {
  try {
    const r = await s.controller.engine.request('clearCache', { cacheDir: s.controller.settings().cacheDirectory });
    void vscode.window.showInformationMessage(`Influence Lens: cache cleared (${r.removed} files).`);
  } catch (e) {
    s.controller.showError(e);
  }
};

/** Copies the bundled sample into global storage (once) and opens it. */
const openSample: Factory = (s) => async () => {
  const src = vscode.Uri.joinPath(s.ctx.extensionUri, 'samples', 'digits');
  const dst = vscode.Uri.joinPath(s.ctx.globalStorageUri, 'digits-sample');
  for (const f of ['train.csv', 'validation.csv', 'test.csv', 'model.onnx']) {
    const to = vscode.Uri.joinPath(dst, f);
    try {
      await vscode.workspace.fs.stat(to);
    } catch {
      await vscode.workspace.fs.copy(vscode.Uri.joinPath(src, f), to, { overwrite: false });
    }
  }
  const cfg = vscode.Uri.joinPath(dst, '.vscode', 'influence-lens.json');
  await vscode.workspace.fs.writeFile(
    cfg,
    new TextEncoder().encode(
      JSON.stringify(
        {
          model: 'model.onnx',
          train: 'train.csv',
          test: 'test.csv',
          validation: 'validation.csv',
          labelColumn: 'label',
        },
        null,
        2,
      ) + '\n',
    ),
  );
  await vscode.commands.executeCommand('vscode.openFolder', dst, { forceNewWindow: false });
};

export const COMMANDS: Record<CommandId, Factory> = {
  [COMMAND.useAsModel]: useAs('model'),
  [COMMAND.useAsTrain]: useAs('train'),
  [COMMAND.useAsTest]: useAs('test'),
  [COMMAND.useAsValidation]: useAs('validation'),
  [COMMAND.chooseModel]: choose('model'),
  [COMMAND.chooseTrain]: choose('train'),
  [COMMAND.chooseTest]: choose('test'),
  [COMMAND.chooseValidation]: choose('validation'),
  [COMMAND.chooseLabelColumn]: chooseLabelColumn,
  [COMMAND.explainRow]: explainRow,
  [COMMAND.explainRowNumber]: explainRowNumber,
  [COMMAND.explainImage]: explainImage,
  [COMMAND.explainWithLayers]: explainWithLayers,
  [COMMAND.runAudit]: runAudit,
  [COMMAND.auditFile]: auditFile,
  [COMMAND.exportCleaned]: exportCleaned,
  [COMMAND.revealLine]: revealLine,
  [COMMAND.revealRow]: revealRow,
  [COMMAND.dropRow]: rowSet('dropped'),
  [COMMAND.markReviewed]: rowSet('reviewed'),
  [COMMAND.refresh]: refresh,
  [COMMAND.clearCache]: clearCache,
  [COMMAND.openPanel]: (s) => () => s.panel.show(),
  [COMMAND.cancel]: (s) => () => s.controller.cancelAll(),
  [COMMAND.showLog]: (s) => () => s.controller.output.show(),
  [COMMAND.openSample]: openSample,
};

export function registerCommands(s: Services): vscode.Disposable[] {
  return Object.entries(COMMANDS).map(([id, make]) => vscode.commands.registerCommand(id, make(s)));
}
