/**
 * Runs engine requests for the commands: trust check, progress with a working Cancel,
 * the output log, the status bar, and error notifications with a fix chosen by the error's CODE.
 */
import * as vscode from 'vscode';
import type { AuditView, ExplainView } from '../protocol/webview';
import { COMMAND } from './commandIds';
import { EngineClient, EngineError } from './engineClient';
import { fixFor } from './fixes';
import type { CommonParams, RowMark, RunLog, TableChoice } from '../protocol/engine';
import { ProjectStore, type Role } from './project';
import { readSettings, type Settings } from './settings';

/** GitLens-style bridge: the core only ever sees an AbortSignal. */
export function toAbortSignal(token: vscode.CancellationToken): AbortSignal {
  const ac = new AbortController();
  if (token.isCancellationRequested) ac.abort();
  else token.onCancellationRequested(() => ac.abort());
  return ac.signal;
}

export interface Results {
  explain: {
    view: ExplainView;
    marks: RowMark[];
    modelPath: string;
    trainPath: string;
    testPath: string;
    testRow: number;
  } | null;
  audit: { view: AuditView; marks: RowMark[]; trainPath: string } | null;
}

export class Controller implements vscode.Disposable {
  readonly results: Results = { explain: null, audit: null };
  private readonly emitter = new vscode.EventEmitter<void>();
  readonly onDidChange = this.emitter.event;
  /** The last error shown, for tests and the tree. */
  lastError: { code: string; message: string } | null = null;
  private busy = 0;
  /** Aborts every running task: the Cancel command (the notification's Cancel does the same per task). */
  private readonly running = new Set<AbortController>();

  constructor(
    readonly engine: EngineClient,
    readonly project: ProjectStore,
    readonly output: vscode.OutputChannel,
    private readonly status: vscode.StatusBarItem,
  ) {
    this.setStatus();
  }

  settings(): Settings {
    const cfg = vscode.workspace.getConfiguration('influenceLens');
    const { settings, problems } = readSettings((k) => cfg.get(k));
    for (const p of problems) this.output.appendLine(`settings: ${p}`);
    return settings;
  }

  table(): TableChoice {
    const p = this.project.get();
    return { labelColumn: p.labelColumn, features: p.features };
  }

  common(model: string, train: string): CommonParams {
    const s = this.settings();
    const images =
      s.imageColumn || s.preprocess ? { images: { imageColumn: s.imageColumn, preprocess: s.preprocess } } : {};
    return {
      model,
      train,
      table: this.table(),
      damping: s.damping,
      head: s.head,
      topK: s.topK,
      imageShape: s.imageShape,
      cacheDir: s.cacheDirectory,
      batchSize: s.batchSize,
      ...images,
    };
  }

  setExplain(r: Results['explain']): void {
    this.results.explain = r;
    this.emitter.fire();
  }

  setAudit(r: Results['audit']): void {
    this.results.audit = r;
    this.emitter.fire();
  }

  private setStatus(text?: string): void {
    const a = this.results.audit?.view;
    this.status.text = this.busy
      ? `$(sync~spin) Influence Lens: ${text ?? 'working…'}`
      : `$(beaker) Influence Lens${a?.memorizedCount ? `: ${a.memorizedCount} memorized` : ''}`;
    this.status.tooltip = this.busy ? 'Influence Lens is computing: click to cancel' : 'Influence Lens: open the panel';
    this.status.command = this.busy ? COMMAND.cancel : COMMAND.openPanel;
    this.status.show();
  }

  log(line: string): void {
    this.output.appendLine(`[${new Date().toISOString()}] ${line}`);
  }

  logRun(what: string, log: RunLog): void {
    const stages = Object.entries(log.seconds)
      .map(([k, v]) => `${k} ${v.toFixed(3)} s`)
      .join(', ');
    this.log(`${what}: damping ${log.damping} (${log.dampingRule}); cache ${log.cache}; ${stages}`);
  }

  /** True when models may run; otherwise says why (restricted workspace). */
  trusted(): boolean {
    if (vscode.workspace.isTrusted) return true;
    void vscode.window
      .showWarningMessage(
        'Influence Lens runs no model in a restricted workspace: an ONNX model is code that onnxruntime executes. Trust this workspace to compute influence.',
        'Manage Workspace Trust',
      )
      .then((a) => a && vscode.commands.executeCommand('workbench.trust.manage'));
    return false;
  }

  /** Runs a task with a cancellable progress notification. Undefined when cancelled or failed. */
  async run<T>(
    title: string,
    task: (signal: AbortSignal, progress: (stage: string, done: number, total: number) => void) => Promise<T>,
  ): Promise<T | undefined> {
    if (!this.trusted()) return undefined;
    this.busy++;
    this.setStatus(title);
    try {
      return await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `Influence Lens: ${title}`, cancellable: true },
        async (progress, token) => {
          let last = 0;
          const report = (stage: string, done: number, total: number) => {
            const pct = total > 0 ? Math.round((100 * done) / total) : 0;
            progress.report({
              message: `${stage} ${pct}%`,
              increment: stage === 'read' || stage === 'scores' ? Math.max(0, pct - last) / 2 : undefined,
            });
            last = pct;
          };
          const ac = new AbortController();
          this.running.add(ac);
          try {
            this.lastError = null;
            return await task(AbortSignal.any([toAbortSignal(token), ac.signal]), report);
          } catch (e) {
            this.showError(e);
            return undefined;
          } finally {
            this.running.delete(ac);
          }
        },
      );
    } finally {
      this.busy--;
      this.setStatus();
    }
  }

  /** Cancels every running task; returns how many. */
  cancelAll(): number {
    const n = this.running.size;
    for (const ac of this.running) ac.abort();
    return n;
  }

  showError(e: unknown): void {
    if (e instanceof EngineError) {
      if (e.code === 'CANCELLED') {
        this.log('cancelled');
        void vscode.window.showInformationMessage('Influence Lens: cancelled.');
        return;
      }
      this.lastError = { code: e.code, message: e.message };
      this.log(`error: ${e.detail.formatted}`);
      const d = e.detail;
      const where = d.file ? ` (${vscode.workspace.asRelativePath(d.file)}${d.line ? `:${d.line}` : ''})` : '';
      const fix = fixFor(e.code);
      const actions = [fix?.title, d.file && d.line ? 'Go to Problem' : undefined].filter((x): x is string => !!x);
      void vscode.window.showErrorMessage(`Influence Lens: ${e.message}${where} [${e.code}]`, ...actions).then((a) => {
        if (!a) return;
        if (a === 'Go to Problem' && d.file && d.line)
          void vscode.commands.executeCommand(COMMAND.revealLine, vscode.Uri.file(d.file), d.line, d.col);
        else if (fix && a === fix.title) void vscode.commands.executeCommand(fix.command, ...(fix.args ?? []));
      });
      return;
    }
    const err = e as Error;
    this.lastError = { code: 'INTERNAL', message: err?.message ?? String(e) };
    this.log(`internal error: ${err?.stack ?? String(e)}`);
    void vscode.window
      .showErrorMessage(`Influence Lens: internal error: ${err?.message ?? String(e)}`, 'Show Log')
      .then((a) => a && this.output.show());
  }

  /** Marks for one data file, explain's and audit's. */
  marksFor(fsPath: string): RowMark[] {
    const out: RowMark[] = [];
    const same = (p: string) => vscode.Uri.file(p).fsPath === vscode.Uri.file(fsPath).fsPath;
    if (this.results.explain && same(this.results.explain.trainPath)) out.push(...this.results.explain.marks);
    if (this.results.audit && same(this.results.audit.trainPath)) out.push(...this.results.audit.marks);
    return out;
  }

  /** The project file for a role, or undefined. */
  path(role: Role): string | undefined {
    return this.project.path(role);
  }

  dispose(): void {
    this.emitter.dispose();
  }
}
