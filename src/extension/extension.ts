/** Activation: wires the engine client, the project store, the views and the commands. */
import * as vscode from 'vscode';
import { registerCommands } from './commands';
import { Controller } from './controller';
import { EditorIntegration, RowSets } from './editor';
import { EngineClient } from './engineClient';
import { PanelController } from './panel';
import { ProjectStore } from './project';
import { InfluenceTree } from './tree';

/** What activate() returns: the services, for the integration tests. */
export interface Api {
  controller: Controller;
  panel: PanelController;
  editor: EditorIntegration;
  engine: EngineClient;
}

export async function activate(ctx: vscode.ExtensionContext): Promise<Api> {
  const output = vscode.window.createOutputChannel('Influence Lens');
  const engine = new EngineClient(vscode.Uri.joinPath(ctx.extensionUri, 'dist', 'worker.js').fsPath, (l) =>
    output.appendLine(l),
  );
  const project = new ProjectStore();
  await project.load();
  const status = vscode.window.createStatusBarItem('influenceLens.status', vscode.StatusBarAlignment.Left, 0);
  status.name = 'Influence Lens';
  const controller = new Controller(engine, project, output, status);
  const sets = new RowSets(ctx.workspaceState);
  const panel = new PanelController(ctx, controller);
  const editor = new EditorIntegration(controller, sets);
  const tree = new InfluenceTree(controller);
  ctx.subscriptions.push(
    output,
    engine,
    project,
    status,
    controller,
    panel,
    editor,
    tree,
    vscode.window.createTreeView('influenceLens.tree', { treeDataProvider: tree, showCollapseAll: true }),
    ...registerCommands({ ctx, controller, panel, editor, sets }),
    vscode.workspace.onDidGrantWorkspaceTrust(() => controller.log('workspace trusted: models may run')),
  );
  controller.log(`activated; workspace ${vscode.workspace.isTrusted ? 'trusted' : 'restricted: no model will run'}`);
  // No deactivate(): VS Code disposes ctx.subscriptions, and disposing the engine client stops its process.
  return { controller, panel, editor, engine };
}
