/**
 * In the data file: decorations and hovers on listed rows, a flash on reveal, a CodeLens on the
 * cursor's row, and Problems-panel diagnostics with quick fixes for the audit's flagged rows.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { COMMAND } from './commandIds';
import type { Controller } from './controller';
import type { RowMark } from '../protocol/engine';

export const DATA_SELECTOR: vscode.DocumentSelector = [
  { scheme: 'file', pattern: '**/*.csv' },
  { scheme: 'file', pattern: '**/*.tsv' },
  { scheme: 'file', pattern: '**/*.jsonl' },
];

export function isDataFile(uri: vscode.Uri): boolean {
  return uri.scheme === 'file' && ['.csv', '.tsv', '.jsonl'].includes(path.extname(uri.fsPath).toLowerCase());
}

const COLORS: Record<RowMark['kind'], string> = {
  helpful: 'charts.green',
  harmful: 'charts.red',
  memorized: 'charts.orange',
  suspicious: 'charts.yellow',
};
const HINTS: Record<RowMark['kind'], string> = {
  helpful: 'helps',
  harmful: 'hurts',
  memorized: 'memorized',
  suspicious: 'suspicious',
};

/** Workspace-state sets of rows per training file: reviewed (hidden from Problems) and dropped (left out of exports). */
export class RowSets {
  constructor(private readonly state: vscode.Memento) {}

  private key(kind: 'reviewed' | 'dropped', file: string): string {
    return `influenceLens.${kind}:${vscode.Uri.file(file).fsPath}`;
  }

  get(kind: 'reviewed' | 'dropped', file: string): Set<number> {
    return new Set(this.state.get<number[]>(this.key(kind, file), []));
  }

  async add(kind: 'reviewed' | 'dropped', file: string, row: number): Promise<void> {
    const s = this.get(kind, file);
    s.add(row);
    await this.state.update(
      this.key(kind, file),
      [...s].sort((a, b) => a - b),
    );
  }
}

export class EditorIntegration
  implements vscode.Disposable, vscode.HoverProvider, vscode.CodeLensProvider, vscode.CodeActionProvider
{
  private readonly types: Record<RowMark['kind'], vscode.TextEditorDecorationType>;
  private readonly flashType: vscode.TextEditorDecorationType;
  private readonly diagnostics = vscode.languages.createDiagnosticCollection('influence-lens');
  private readonly lensEmitter = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.lensEmitter.event;
  private readonly subs: vscode.Disposable[] = [];

  constructor(
    private readonly controller: Controller,
    private readonly sets: RowSets,
  ) {
    const make = (kind: RowMark['kind']) =>
      vscode.window.createTextEditorDecorationType({
        isWholeLine: true,
        overviewRulerColor: new vscode.ThemeColor(COLORS[kind]),
        overviewRulerLane: vscode.OverviewRulerLane.Right,
        borderWidth: '0 0 0 3px',
        borderStyle: 'solid',
        borderColor: new vscode.ThemeColor(COLORS[kind]),
        after: { color: new vscode.ThemeColor(COLORS[kind]), margin: '0 0 0 2em', fontStyle: 'italic' },
      });
    this.types = {
      helpful: make('helpful'),
      harmful: make('harmful'),
      memorized: make('memorized'),
      suspicious: make('suspicious'),
    };
    this.flashType = vscode.window.createTextEditorDecorationType({
      isWholeLine: true,
      backgroundColor: new vscode.ThemeColor('editor.findMatchHighlightBackground'),
    });
    this.subs.push(
      this.diagnostics,
      controller.onDidChange(() => this.refresh()),
      vscode.window.onDidChangeVisibleTextEditors(() => this.decorateAll()),
      vscode.window.onDidChangeTextEditorSelection(
        (e) => isDataFile(e.textEditor.document.uri) && this.lensEmitter.fire(),
      ),
      vscode.languages.registerHoverProvider(DATA_SELECTOR, this),
      vscode.languages.registerCodeLensProvider(DATA_SELECTOR, this),
      vscode.languages.registerCodeActionsProvider(DATA_SELECTOR, this, {
        providedCodeActionKinds: [vscode.CodeActionKind.QuickFix],
      }),
    );
  }

  refresh(): void {
    this.decorateAll();
    this.publishDiagnostics();
  }

  private decorateAll(): void {
    for (const editor of vscode.window.visibleTextEditors) {
      if (!isDataFile(editor.document.uri)) continue;
      const marks = this.controller.marksFor(editor.document.uri.fsPath);
      for (const kind of Object.keys(this.types) as RowMark['kind'][]) {
        const opts: vscode.DecorationOptions[] = marks
          .filter((m) => m.kind === kind && m.line > 0 && m.line - 1 < editor.document.lineCount)
          .map((m) => ({
            range: new vscode.Range(m.line - 1, 0, m.line - 1, 0),
            renderOptions: {
              after: {
                contentText: `◀ row ${m.row} ${HINTS[kind]}${kind === 'helpful' || kind === 'harmful' ? ` (${m.value > 0 ? '+' : ''}${m.value.toPrecision(3)} if removed)` : ''}`,
              },
            },
          }));
        editor.setDecorations(this.types[kind], opts);
      }
    }
  }

  private publishDiagnostics(): void {
    this.diagnostics.clear();
    const au = this.controller.results.audit;
    if (!au) return;
    const reviewed = this.sets.get('reviewed', au.trainPath);
    // A row with a line (a text file, a manifest) is diagnosed there; a row without one (an image
    // folder's image, a Parquet/Arrow row) on its own file: VS Code takes diagnostics on any URI.
    const byFile = new Map<string, vscode.Diagnostic[]>();
    for (const m of au.marks) {
      if (reviewed.has(m.row)) continue;
      const onLine = m.line > 0;
      if (!onLine && !m.file) continue;
      const range = onLine
        ? new vscode.Range(m.line - 1, 0, m.line - 1, Number.MAX_SAFE_INTEGER)
        : new vscode.Range(0, 0, 0, 0);
      const d = new vscode.Diagnostic(
        range,
        m.message,
        m.kind === 'memorized' ? vscode.DiagnosticSeverity.Warning : vscode.DiagnosticSeverity.Information,
      );
      d.source = 'Influence Lens';
      d.code = m.kind;
      const file = onLine ? au.trainPath : m.file!;
      byFile.set(file, [...(byFile.get(file) ?? []), Object.assign(d, { row: m.row })]);
    }
    for (const [file, diags] of byFile) this.diagnostics.set(vscode.Uri.file(file), diags);
  }

  /** Opens a file at a 1-based line, selects it and flashes it. */
  async reveal(uri: vscode.Uri, line: number, col?: number): Promise<vscode.TextEditor> {
    const doc = await vscode.workspace.openTextDocument(uri);
    const editor = await vscode.window.showTextDocument(doc, {
      viewColumn: vscode.ViewColumn.One,
      preserveFocus: false,
    });
    const l = Math.max(0, Math.min(line - 1, doc.lineCount - 1));
    const range = doc.lineAt(l).range;
    editor.selection = col
      ? new vscode.Selection(l, col - 1, l, col - 1)
      : new vscode.Selection(range.start, range.end);
    editor.revealRange(range, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
    editor.setDecorations(this.flashType, [range]);
    setTimeout(() => editor.setDecorations(this.flashType, []), 1500);
    return editor;
  }

  provideHover(doc: vscode.TextDocument, pos: vscode.Position): vscode.Hover | undefined {
    const marks = this.controller.marksFor(doc.uri.fsPath).filter((m) => m.line - 1 === pos.line);
    if (!marks.length) return undefined;
    const md = new vscode.MarkdownString();
    md.isTrusted = false;
    for (const m of marks) {
      md.appendMarkdown(`**Influence Lens: row ${m.row}, ${m.kind}**\n\n`);
      // A manifest row's image (a data URI made by the engine, not text from the file).
      if (m.thumb?.startsWith('data:image/png;base64,')) md.appendMarkdown(`![row ${m.row}](${m.thumb}|width=64)\n\n`);
      md.appendText(m.message);
      md.appendMarkdown('\n\n');
    }
    return new vscode.Hover(md);
  }

  provideCodeLenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.document !== doc) return [];
    const role = this.controller.project.roleOf(doc.uri.fsPath);
    if (role !== 'test' && role !== 'train' && role !== 'validation') return [];
    const line = editor.selection.active.line;
    if (line === 0) return []; // the header
    const range = new vscode.Range(line, 0, line, 0);
    return [
      new vscode.CodeLens(range, {
        title: "$(beaker) Explain this row's prediction",
        command: COMMAND.explainRow,
        arguments: [doc.uri, line + 1],
      }),
    ];
  }

  provideCodeActions(
    doc: vscode.TextDocument,
    _range: vscode.Range,
    ctx: vscode.CodeActionContext,
  ): vscode.CodeAction[] {
    const out: vscode.CodeAction[] = [];
    for (const d of ctx.diagnostics) {
      if (d.source !== 'Influence Lens') continue;
      const row = (d as vscode.Diagnostic & { row?: number }).row;
      if (row === undefined) continue;
      const drop = new vscode.CodeAction(`Drop row ${row} from cleaned export`, vscode.CodeActionKind.QuickFix);
      drop.command = { command: COMMAND.dropRow, title: drop.title, arguments: [doc.uri.fsPath, row] };
      drop.diagnostics = [d];
      const reviewed = new vscode.CodeAction(`Mark row ${row} as reviewed`, vscode.CodeActionKind.QuickFix);
      reviewed.command = { command: COMMAND.markReviewed, title: reviewed.title, arguments: [doc.uri.fsPath, row] };
      reviewed.diagnostics = [d];
      out.push(drop, reviewed);
    }
    return out;
  }

  dispose(): void {
    for (const t of Object.values(this.types)) t.dispose();
    this.flashType.dispose();
    this.lensEmitter.dispose();
    for (const s of this.subs) s.dispose();
  }
}
