/** The results panel (webview): CSP with a fresh nonce, data only by postMessage, restores after reload. */
import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import {
  isWebviewMessage,
  type ExportResult,
  type HostMessage,
  type PanelState,
  type Ranking,
} from '../protocol/webview';
import { COMMAND } from './commandIds';
import type { Controller } from './controller';

export const PANEL_TYPE = 'influenceLens.panel';
/** Workspace state: the ranking last chosen in the panel. */
const RANKING_KEY = 'influenceLens.ranking';

export class PanelController implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private readonly subs: vscode.Disposable[] = [];

  constructor(
    private readonly ctx: vscode.ExtensionContext,
    private readonly controller: Controller,
  ) {
    this.subs.push(
      controller.onDidChange(() => this.post({ type: 'state', state: this.state() })),
      vscode.window.registerWebviewPanelSerializer(PANEL_TYPE, {
        deserializeWebviewPanel: async (panel) => this.attach(panel),
      }),
    );
  }

  /** The webview panel, for tests. */
  get webviewPanel(): vscode.WebviewPanel | undefined {
    return this.panel;
  }

  private ranking(): Ranking {
    return this.ctx.workspaceState.get<Ranking>(RANKING_KEY, 'influence');
  }

  state(): PanelState {
    return {
      explain: this.controller.results.explain?.view ?? null,
      audit: this.controller.results.audit?.view ?? null,
      ranking: this.ranking(),
    };
  }

  show(preserveFocus = false): void {
    if (this.panel) {
      this.panel.reveal(undefined, preserveFocus);
      return;
    }
    const panel = vscode.window.createWebviewPanel(
      PANEL_TYPE,
      'Influence Lens',
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus },
      this.options(),
    );
    this.attach(panel);
  }

  private options(): vscode.WebviewPanelOptions & vscode.WebviewOptions {
    return {
      enableScripts: true,
      retainContextWhenHidden: false,
      localResourceRoots: [
        vscode.Uri.joinPath(this.ctx.extensionUri, 'dist'),
        vscode.Uri.joinPath(this.ctx.extensionUri, 'media'),
      ],
    };
  }

  private attach(panel: vscode.WebviewPanel): void {
    this.panel = panel;
    panel.webview.options = this.options();
    panel.iconPath = vscode.Uri.joinPath(this.ctx.extensionUri, 'media', 'icon.svg');
    panel.webview.html = this.html(panel.webview);
    panel.onDidDispose(() => {
      if (this.panel === panel) this.panel = undefined;
    });
    panel.webview.onDidReceiveMessage((m: unknown) => this.onMessage(m));
  }

  post(m: HostMessage): void {
    void this.panel?.webview.postMessage(m);
  }

  private async onMessage(m: unknown): Promise<void> {
    if (!isWebviewMessage(m)) return;
    switch (m.type) {
      case 'ready':
        this.post({ type: 'state', state: this.state() });
        return;
      case 'setRanking':
        await this.ctx.workspaceState.update(RANKING_KEY, m.ranking);
        return;
      case 'setLayers':
        await vscode.commands.executeCommand(COMMAND.explainWithLayers, m.layers);
        return;
      case 'reveal':
        // A line, an image (and its manifest line), or a Parquet/Arrow row's view in this panel.
        await vscode.commands.executeCommand(COMMAND.revealRow, m.file, m.row, m.line);
        return;
      case 'runAudit':
        await vscode.commands.executeCommand(COMMAND.runAudit);
        return;
      case 'exportCleaned': {
        const r = (await vscode.commands.executeCommand(COMMAND.exportCleaned)) as ExportResult | undefined;
        this.post({ type: 'reply', requestId: m.requestId, ok: !!r?.ok, message: r?.message ?? 'Export cancelled.' });
        return;
      }
    }
  }

  private html(webview: vscode.Webview): string {
    const nonce = randomBytes(16).toString('base64');
    const script = webview.asWebviewUri(vscode.Uri.joinPath(this.ctx.extensionUri, 'dist', 'webview.js'));
    const style = webview.asWebviewUri(vscode.Uri.joinPath(this.ctx.extensionUri, 'media', 'panel.css'));
    const csp = [
      `default-src 'none'`,
      `img-src ${webview.cspSource} data:`,
      `style-src ${webview.cspSource}`,
      `script-src 'nonce-${nonce}'`,
    ].join('; ');
    // The page is a fixed shell: no data is pasted into it; everything arrives by postMessage.
    return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${style.toString()}">
<title>Influence Lens</title>
</head>
<body>
<main id="app"></main>
<script nonce="${nonce}" src="${script.toString()}"></script>
</body>
</html>`;
  }

  dispose(): void {
    this.panel?.dispose();
    for (const s of this.subs) s.dispose();
  }
}
