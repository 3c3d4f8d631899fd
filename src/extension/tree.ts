/** The sidebar tree: project files, the current prediction, helpful/harmful/memorized rows. */
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { FlaggedRow, RowView } from '../protocol/webview';
import { className, describeLossChange, describeReason, fmt } from '../protocol/words';
import { CHOOSE, COMMAND } from './commandIds';
import type { Controller } from './controller';
import { ROLE_NAMES, ROLES, type Role } from './project';

type Node =
  | { kind: 'group'; id: 'project' | 'prediction' | 'helpful' | 'harmful' | 'flagged'; label: string }
  | { kind: 'file'; role: Role }
  | { kind: 'info'; label: string; description?: string; tooltip?: string }
  | { kind: 'row'; file: string; row: RowView }
  | { kind: 'flagged'; file: string; row: FlaggedRow };

/** A row's place in the tree: its line, its image's name, or its row of a Parquet/Arrow file. */
function where(r: { line: number; file?: string; fileRow?: number }): string {
  if (!r.file) return `line ${r.line}`;
  const name = path.basename(r.file);
  return r.fileRow !== undefined ? `${name} row ${r.fileRow}` : r.line > 0 ? `${name}, line ${r.line}` : name;
}

export class InfluenceTree implements vscode.TreeDataProvider<Node>, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<Node | undefined>();
  readonly onDidChangeTreeData = this.emitter.event;
  private readonly subs: vscode.Disposable[];

  constructor(private readonly controller: Controller) {
    this.subs = [
      controller.onDidChange(() => this.emitter.fire(undefined)),
      controller.project.onDidChange(() => this.emitter.fire(undefined)),
    ];
  }

  getChildren(node?: Node): Node[] {
    const c = this.controller;
    const ex = c.results.explain;
    const au = c.results.audit;
    const topK = c.settings().topK;
    if (!node) {
      return [
        { kind: 'group', id: 'project', label: 'Project' },
        { kind: 'group', id: 'prediction', label: 'Current prediction' },
        { kind: 'group', id: 'helpful', label: 'Helpful rows' },
        { kind: 'group', id: 'harmful', label: 'Harmful rows' },
        { kind: 'group', id: 'flagged', label: 'Memorized / suspicious rows' },
      ];
    }
    if (node.kind !== 'group') return [];
    switch (node.id) {
      case 'project':
        return [
          ...ROLES.map((role) => ({ kind: 'file' as const, role })),
          {
            kind: 'info',
            label: 'Label column',
            description: c.project.get().labelColumn ?? 'label (default)',
            tooltip: 'Run "Influence Lens: Choose Label Column…" to change it',
          },
        ];
      case 'prediction': {
        if (!ex)
          return [
            {
              kind: 'info',
              label: 'No prediction explained yet',
              tooltip: 'Open a test file and run "Explain This Row\'s Prediction"',
            },
          ];
        const t = ex.view.test;
        const cls = (k: number) => className(ex.view.classes, k);
        return [
          { kind: 'info', label: `Row ${t.row} (${where(t)})`, description: path.basename(ex.testPath) },
          {
            kind: 'info',
            label: `Predicted ${cls(t.predicted)}`,
            description: `p = ${t.probabilities[t.predicted].toFixed(3)}`,
          },
          {
            kind: 'info',
            label: t.labelled ? `Label ${cls(t.label)}` : 'No label',
            description: `loss ${t.loss.toPrecision(3)}`,
          },
        ];
      }
      case 'helpful':
      case 'harmful': {
        if (!ex) return [{ kind: 'info', label: 'Explain a prediction to list rows' }];
        const rows = ex.view.byInfluence[node.id].slice(0, topK);
        return rows.length
          ? rows.map((row) => ({ kind: 'row' as const, file: ex.trainPath, row }))
          : [{ kind: 'info', label: '(none)' }];
      }
      case 'flagged': {
        if (!au) return [{ kind: 'info', label: 'Run an audit to flag rows', tooltip: 'Influence Lens: Run Audit' }];
        const rows = au.view.flagged.slice(0, Math.max(topK, au.view.memorizedCount ?? 0));
        return rows.length
          ? rows.map((row) => ({ kind: 'flagged' as const, file: au.trainPath, row }))
          : [{ kind: 'info', label: '(none)' }];
      }
    }
  }

  getTreeItem(node: Node): vscode.TreeItem {
    const c = this.controller;
    switch (node.kind) {
      case 'group': {
        const item = new vscode.TreeItem(node.label, vscode.TreeItemCollapsibleState.Expanded);
        item.id = `group:${node.id}`;
        item.contextValue = `group-${node.id}`;
        return item;
      }
      case 'file': {
        const p = c.path(node.role);
        const exists = p ? vscode.workspace.asRelativePath(p) : undefined;
        const item = new vscode.TreeItem(ROLE_NAMES[node.role]);
        item.description = exists ?? (node.role === 'validation' ? 'not set (optional)' : 'not set: click to choose');
        item.iconPath = new vscode.ThemeIcon(node.role === 'model' ? 'circuit-board' : 'table');
        item.tooltip = p ? `${p}\nClick to change` : 'Click to choose';
        item.command = { command: CHOOSE[node.role], title: 'Change' };
        item.id = `file:${node.role}`;
        return item;
      }
      case 'info': {
        const item = new vscode.TreeItem(node.label);
        item.description = node.description;
        item.tooltip = node.tooltip;
        return item;
      }
      case 'row': {
        const r = node.row;
        const helpful = r.lossChangeIfRemoved > 0;
        const item = new vscode.TreeItem(`Row ${r.row} (${where(r)})`);
        item.description = `${fmt(r.lossChangeIfRemoved)} if removed · label ${r.label}`;
        item.tooltip = new vscode.MarkdownString(
          `**Row ${r.row}**, line ${r.line}: label ${r.label}, predicted ${r.predicted}\n\n${describeLossChange(r.lossChangeIfRemoved)}; leverage-corrected ${fmt(r.lossChangeIfRemovedNewton)}.\n\nRelative influence ${fmt(r.relativeInfluence)}; margin change if removed ${fmt(r.classificationInfluence)}.`,
        );
        item.iconPath =
          r.file && r.fileRow === undefined
            ? vscode.Uri.file(r.file)
            : new vscode.ThemeIcon(
                helpful ? 'arrow-up' : 'arrow-down',
                new vscode.ThemeColor(helpful ? 'charts.green' : 'charts.red'),
              );
        item.command = r.file
          ? { command: COMMAND.revealRow, title: 'Open', arguments: ['train', r.row, r.line] }
          : { command: COMMAND.revealLine, title: 'Reveal', arguments: [vscode.Uri.file(node.file), r.line] };
        return item;
      }
      case 'flagged': {
        const r = node.row;
        const classes = c.results.audit?.view.classes ?? null;
        const item = new vscode.TreeItem(`Row ${r.row} (${where(r)})`);
        item.description = `${r.memorized ? 'memorized · ' : ''}suspicion ${r.suspicion.toFixed(2)}`;
        item.tooltip = new vscode.MarkdownString(
          `**Row ${r.row}**, line ${r.line}: label ${className(classes, r.label)}, predicted ${className(classes, r.predicted)}\n\n${r.reasons.map((x) => `- ${describeReason(x, classes)}`).join('\n')}`,
        );
        item.iconPath =
          r.file && r.fileRow === undefined
            ? vscode.Uri.file(r.file)
            : new vscode.ThemeIcon(
                r.memorized ? 'warning' : 'search',
                new vscode.ThemeColor(r.memorized ? 'charts.orange' : 'charts.yellow'),
              );
        item.command = r.file
          ? { command: COMMAND.revealRow, title: 'Open', arguments: ['train', r.row, r.line] }
          : { command: COMMAND.revealLine, title: 'Reveal', arguments: [vscode.Uri.file(node.file), r.line] };
        return item;
      }
    }
  }

  dispose(): void {
    this.emitter.dispose();
    for (const s of this.subs) s.dispose();
  }
}
