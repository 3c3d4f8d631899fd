/**
 * Integration tests in the real extension host of code-server, on a copy of the bundled sample.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { COMMAND } from '../../src/extension/commandIds';
import type { Api } from '../../src/extension/extension';

const ws = () => vscode.workspace.workspaceFolders![0].uri;
const file = (name: string) => vscode.Uri.joinPath(ws(), name);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function api(): Promise<Api> {
  const ext = vscode.extensions.getExtension<Api>('influence-lens.influence-lens');
  assert.ok(ext, 'extension installed');
  return ext.activate();
}

async function until<T>(what: string, f: () => T | undefined | null | false, ms = 30000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function projectFile(): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(ws().fsPath, '.vscode', 'influence-lens.json'), 'utf8'));
}

suite('Influence Lens in VS Code', function () {
  this.timeout(120000);

  test('registers its commands', async () => {
    await api();
    const all = await vscode.commands.getCommands(true);
    const pkg = JSON.parse(
      fs.readFileSync(
        path.join(vscode.extensions.getExtension('influence-lens.influence-lens')!.extensionPath, 'package.json'),
        'utf8',
      ),
    );
    const declared: string[] = pkg.contributes.commands.map((c: { command: string }) => c.command);
    assert.ok(declared.length >= 20);
    for (const id of declared) assert.ok(all.includes(id), `${id} registered`);
  });

  test('the setup flow stores its choices in .vscode/influence-lens.json', async () => {
    await api();
    await vscode.commands.executeCommand(COMMAND.useAsModel, file('model.onnx'));
    await vscode.commands.executeCommand(COMMAND.useAsTrain, file('train.csv'));
    await vscode.commands.executeCommand(COMMAND.useAsTest, file('test.csv'));
    await vscode.commands.executeCommand(COMMAND.useAsValidation, file('validation.csv'));
    const a = await api();
    await a.controller.project.update({ labelColumn: 'label' });
    assert.deepEqual(projectFile(), {
      model: 'model.onnx',
      train: 'train.csv',
      test: 'test.csv',
      validation: 'validation.csv',
      labelColumn: 'label',
    });
    assert.equal(a.controller.path('train'), file('train.csv').fsPath);
  });

  test('explain opens the panel with helpful and harmful rows', async () => {
    const a = await api();
    // Line 148 of test.csv is data row 146 (the header is line 1).
    await vscode.commands.executeCommand(COMMAND.explainRow, file('test.csv'), 148);
    const ex = await until('an explanation', () => a.controller.results.explain);
    assert.equal(ex.testRow, 146);
    assert.ok(ex.view.byInfluence.helpful.length > 0);
    assert.ok(ex.view.byInfluence.harmful.length > 0);
    assert.equal(ex.view.image?.width, 8);
    assert.equal(ex.view.byInfluence.helpful[0].features?.length, 64);
    await until('the panel', () => a.panel.webviewPanel);
    const tab = await until('a webview tab', () =>
      vscode.window.tabGroups.all
        .flatMap((g) => g.tabs)
        .find((t) => t.input instanceof vscode.TabInputWebview && t.label === 'Influence Lens'),
    );
    assert.ok(tab);
    assert.ok(ex.marks.some((m) => m.kind === 'helpful'));
    // How far to trust it: the sample's head is at its optimum, and the stability check ran.
    assert.equal(ex.view.head.mode, 'shipped');
    assert.equal(ex.view.head.warning, false);
    assert.ok(ex.view.stability && Object.keys(ex.view.stability.overlaps).join() === 'helpful,harmful');
  });

  test('reveal opens the right file at the right line', async () => {
    await api();
    await vscode.commands.executeCommand(COMMAND.revealLine, file('train.csv'), 37);
    const ed = vscode.window.activeTextEditor;
    assert.ok(ed);
    assert.equal(ed.document.uri.fsPath, file('train.csv').fsPath);
    assert.equal(ed.selection.active.line, 36);
    assert.equal(ed.selection.start.line, 36);
  });

  test('the audit publishes diagnostics for memorized and suspicious rows', async () => {
    const a = await api();
    await vscode.commands.executeCommand(COMMAND.runAudit);
    const au = await until('an audit', () => a.controller.results.audit);
    assert.ok(au.view.heldOut, 'validation file used as held-out set');
    const diags = await until('diagnostics', () => {
      const d = vscode.languages.getDiagnostics(file('train.csv')).filter((x) => x.source === 'Influence Lens');
      return d.length ? d : undefined;
    });
    assert.ok(diags.length >= 5);
    assert.ok(diags.every((d) => d.message.length > 20));
    const mem = au.view.flagged.filter((f) => f.memorized);
    assert.equal(diags.filter((d) => d.severity === vscode.DiagnosticSeverity.Warning).length, mem.length);
    // Quick fixes exist and "Mark as reviewed" removes the diagnostic without touching the file.
    const before = fs.readFileSync(file('train.csv').fsPath);
    const d0 = diags[0];
    const actions = await vscode.commands.executeCommand<vscode.CodeAction[]>(
      'vscode.executeCodeActionProvider',
      file('train.csv'),
      d0.range,
    );
    const titles = actions.map((x) => x.title);
    assert.ok(
      titles.some((t) => /^Drop row \d+ from cleaned export$/.test(t)),
      titles.join('; '),
    );
    const reviewed = actions.find((x) => /^Mark row \d+ as reviewed$/.test(x.title))!;
    await vscode.commands.executeCommand(reviewed.command!.command, ...(reviewed.command!.arguments ?? []));
    const after = vscode.languages.getDiagnostics(file('train.csv')).filter((x) => x.source === 'Influence Lens');
    assert.equal(after.length, diags.length - 1);
    assert.deepEqual(fs.readFileSync(file('train.csv').fsPath), before);
  });

  test('cancel stops a run', async () => {
    const a = await api();
    a.controller.setAudit(null);
    await vscode.workspace
      .getConfiguration('influenceLens')
      .update('cache.enabled', false, vscode.ConfigurationTarget.Workspace);
    try {
      const t0 = Date.now();
      const run = vscode.commands.executeCommand(COMMAND.runAudit);
      await until('the run to start', () => a.engine.pid !== undefined, 10000);
      await sleep(50);
      await vscode.commands.executeCommand(COMMAND.cancel);
      await run;
      assert.ok(Date.now() - t0 < 10000, 'stopped promptly');
      assert.equal(a.controller.results.audit, null, 'no result from a cancelled run');
      assert.equal(a.controller.lastError, null, 'cancelling is not an error');
    } finally {
      await vscode.workspace
        .getConfiguration('influenceLens')
        .update('cache.enabled', undefined, vscode.ConfigurationTarget.Workspace);
    }
  });

  test('a bad label column gives the clear error', async () => {
    const a = await api();
    await a.controller.project.update({ labelColumn: 'target' });
    try {
      await vscode.commands.executeCommand(COMMAND.explainRow, file('test.csv'), 5);
      assert.ok(a.controller.lastError, 'an error was shown');
      assert.equal(a.controller.lastError.code, 'LABEL_COLUMN_MISSING');
      assert.match(a.controller.lastError.message, /target/);
    } finally {
      await a.controller.project.update({ labelColumn: 'label' });
    }
  });
  test("an image folder: explain an image, open a row's image, and the audit diagnoses the images themselves", async () => {
    const a = await api();
    const before = a.controller.path('train');
    await vscode.commands.executeCommand(COMMAND.useAsTrain, file('images/train'));
    try {
      const dir = path.join(ws().fsPath, 'images', 'test', '3');
      const img = vscode.Uri.file(path.join(dir, fs.readdirSync(dir).sort()[0]));
      await vscode.commands.executeCommand(COMMAND.explainImage, img);
      const ex = await until(
        'an explanation of the image',
        () => a.controller.results.explain?.testPath === img.fsPath && a.controller.results.explain,
      );
      assert.equal(ex.view.test.labelled, false);
      assert.ok(ex.view.images && ex.view.test.thumb, 'the test image');
      const row = ex.view.byInfluence.helpful[0];
      assert.ok(
        row.file && row.thumb?.startsWith('data:image/png;base64,'),
        'a listed row is an image with its thumbnail',
      );
      await vscode.commands.executeCommand(COMMAND.revealRow, 'train', row.row, row.line);
      await until(
        "the row's image open",
        () =>
          (vscode.window.tabGroups.activeTabGroup.activeTab?.input as { uri?: vscode.Uri } | undefined)?.uri?.fsPath ===
          row.file,
      );
      await vscode.commands.executeCommand(COMMAND.runAudit);
      const au = await until(
        'an audit of the images',
        () => a.controller.results.audit?.trainPath === file('images/train').fsPath && a.controller.results.audit,
      );
      const flagged = au.view.flagged.filter((f) => f.file);
      assert.equal(flagged.length, au.view.flagged.length, 'every flagged row is an image');
      const diags = await until('diagnostics on an image file', () => {
        const d = vscode.languages
          .getDiagnostics(vscode.Uri.file(flagged[0].file!))
          .filter((x) => x.source === 'Influence Lens');
        return d.length ? d : undefined;
      });
      assert.match(diags[0].message, /row \d+/);
    } finally {
      await a.controller.project.update({ train: before });
    }
  });

  test('a model with 3 layers: the agreement badge, and the layer selector explains the row again over the last 2 (and the next rows)', async () => {
    const a = await api();
    // The LDS MLP of test/fixtures/lds, and agreement.json: the fixture script's ρ and overlaps at λ = 1e-3.
    const root = vscode.extensions.getExtension('influence-lens.influence-lens')!.extensionPath;
    const ref = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/deep/agreement.json'), 'utf8'));
    const want = ref.models.mlp.rows[0];
    const dir = path.join(ws().fsPath, 'deep');
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(path.join(root, 'test/fixtures/lds/mlp/model.onnx'), path.join(dir, 'model.onnx'));
    for (const f of ['train.csv', 'test.csv'])
      fs.copyFileSync(path.join(root, 'test/fixtures/lds', f), path.join(dir, f));
    const before = {
      model: a.controller.path('model'),
      train: a.controller.path('train'),
      test: a.controller.path('test'),
    };
    const config = vscode.workspace.getConfiguration('influenceLens');
    await config.update('damping', ref.lambda, vscode.ConfigurationTarget.Workspace);
    try {
      await vscode.commands.executeCommand(COMMAND.useAsModel, vscode.Uri.file(path.join(dir, 'model.onnx')));
      await vscode.commands.executeCommand(COMMAND.useAsTrain, vscode.Uri.file(path.join(dir, 'train.csv')));
      const test = vscode.Uri.file(path.join(dir, 'test.csv'));
      // Line want.testRow + 2 of test.csv is data row want.testRow.
      await vscode.commands.executeCommand(COMMAND.explainRow, test, want.testRow + 2);
      const ex = await until(
        'an explanation with the head',
        () => a.controller.results.explain?.testPath === test.fsPath && a.controller.results.explain,
      );
      assert.equal(ex.view.layers.choice, 'head');
      assert.equal(ex.view.layers.available, 3, 'the selector shows');
      const numbers = `ρ = ${want.spearman.toFixed(2)}, top-10 overlap ${want.helpful.overlap}/10 helpful, ${want.harmful.overlap}/10 harmful`;
      assert.equal(
        ex.view.agreement?.message,
        `deeper layers change the answer: view with the last 2 layers (${numbers})`,
      );
      await until('the panel', () => a.panel.webviewPanel);
      // The panel's selector posts setLayers; the host checks the message and explains the row again.
      await (a.panel as unknown as { onMessage(m: unknown): Promise<void> }).onMessage({
        type: 'setLayers',
        layers: 'last2',
      });
      const deep = await until(
        'an explanation over the last 2 layers',
        () => a.controller.results.explain?.view.layers.choice === 'last2' && a.controller.results.explain,
      );
      assert.equal(deep.testRow, want.testRow);
      assert.deepEqual(
        deep.view.layers.used.map((l) => l.name),
        ref.models.mlp.layers,
      );
      assert.equal(deep.view.layers.curvature, 'exact');
      assert.deepEqual(deep.view.layers.headOnly, ['lossChangeIfRemovedNewton', 'verified']);
      assert.equal(deep.view.agreement?.message, `deeper layers change the answer (${numbers})`);
      // The next row of the same model and data is explained over the layers chosen.
      await vscode.commands.executeCommand(COMMAND.explainRow, test, want.testRow + 3);
      const next = await until(
        'the next row, over the last 2 layers',
        () => a.controller.results.explain?.testRow === want.testRow + 1 && a.controller.results.explain,
      );
      assert.equal(next.view.layers.choice, 'last2');
      assert.equal(next.view.layers.used.length, 2);
    } finally {
      await config.update('damping', undefined, vscode.ConfigurationTarget.Workspace);
      await a.controller.project.update(before);
    }
  });
});
