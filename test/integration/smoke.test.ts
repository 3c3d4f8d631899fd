// The extension is installed in the real VS Code, activates, and registers its commands.
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';

const ID = 'influence-lens.influence-lens';

suite('smoke', () => {
  test('the extension is present and activates', async () => {
    const ext = vscode.extensions.getExtension(ID);
    assert.ok(ext, `extension ${ID} is not installed in the extension host`);
    await ext.activate();
    assert.equal(ext.isActive, true);
  });

  test('the workspace is the copied sample', () => {
    const folder = vscode.workspace.workspaceFolders?.[0];
    assert.ok(folder, 'no workspace folder is open');
    assert.equal(vscode.workspace.isTrusted, true);
  });
});
