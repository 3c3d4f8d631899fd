/** The workspace's choices (model, data files, label column), kept in .vscode/influence-lens.json. */
import * as path from 'node:path';
import * as vscode from 'vscode';

export type Role = 'model' | 'train' | 'test' | 'validation';
export const ROLES: Role[] = ['model', 'train', 'test', 'validation'];
export const ROLE_NAMES: Record<Role, string> = {
  model: 'Model',
  train: 'Training data',
  test: 'Test data',
  validation: 'Validation data',
};

export interface ProjectChoices {
  model?: string;
  train?: string;
  test?: string;
  validation?: string;
  labelColumn?: string;
  features?: string[];
}

export class ProjectStore implements vscode.Disposable {
  private choices: ProjectChoices = {};
  /** Loads and updates run one at a time, so a watcher reload never interleaves with a write. */
  private queue: Promise<unknown> = Promise.resolve();
  private lastWritten: string | undefined;
  private readonly emitter = new vscode.EventEmitter<void>();
  readonly onDidChange = this.emitter.event;
  private readonly watcher: vscode.FileSystemWatcher | undefined;

  constructor() {
    const folder = this.folder();
    if (folder) {
      this.watcher = vscode.workspace.createFileSystemWatcher(
        new vscode.RelativePattern(folder, '.vscode/influence-lens.json'),
      );
      const reload = () => void this.load().then((changed) => changed && this.emitter.fire());
      this.watcher.onDidChange(reload);
      this.watcher.onDidCreate(reload);
      this.watcher.onDidDelete(reload);
    }
  }

  private folder(): vscode.WorkspaceFolder | undefined {
    return vscode.workspace.workspaceFolders?.[0];
  }

  private file(): vscode.Uri | undefined {
    const f = this.folder();
    return f && vscode.Uri.joinPath(f.uri, '.vscode', 'influence-lens.json');
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.queue.then(op, op);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Reads the file; true when it differs from what this store last wrote. */
  load(): Promise<boolean> {
    return this.serial(async () => {
      const f = this.file();
      if (!f) return false;
      let text: string | undefined;
      try {
        text = new TextDecoder().decode(await vscode.workspace.fs.readFile(f));
      } catch {
        text = undefined;
      }
      if (text !== undefined && text === this.lastWritten) return false;
      try {
        const j = text === undefined ? {} : (JSON.parse(text) as ProjectChoices);
        this.choices = typeof j === 'object' && j ? j : {};
      } catch {
        this.choices = {};
      }
      return true;
    });
  }

  get(): Readonly<ProjectChoices> {
    return this.choices;
  }

  /** Absolute path of a role's file, or undefined. Stored paths are relative to the workspace folder. */
  path(role: Role): string | undefined {
    const p = this.choices[role];
    if (!p) return undefined;
    const f = this.folder();
    return path.isAbsolute(p) || !f ? p : path.join(f.uri.fsPath, p);
  }

  roleOf(fsPath: string): Role | undefined {
    return ROLES.find((r) => this.path(r) && path.resolve(this.path(r)!) === path.resolve(fsPath));
  }

  update(patch: Partial<ProjectChoices>): Promise<void> {
    return this.serial(() => this.write(patch));
  }

  private async write(patch: Partial<ProjectChoices>): Promise<void> {
    const f = this.folder();
    const rel = (p: string | undefined) => {
      if (!p || !f) return p;
      const r = path.relative(f.uri.fsPath, p);
      return r.startsWith('..') || path.isAbsolute(r) ? p : r.split(path.sep).join('/');
    };
    const next: ProjectChoices = { ...this.choices };
    for (const [k, v] of Object.entries(patch) as [keyof ProjectChoices, unknown][]) {
      if (v === undefined) delete next[k];
      else if (k === 'model' || k === 'train' || k === 'test' || k === 'validation') next[k] = rel(v as string);
      else (next as Record<string, unknown>)[k] = v;
    }
    this.choices = next;
    const file = this.file();
    if (file) {
      this.lastWritten = JSON.stringify(next, null, 2) + '\n';
      await vscode.workspace.fs.createDirectory(vscode.Uri.joinPath(file, '..'));
      await vscode.workspace.fs.writeFile(file, new TextEncoder().encode(this.lastWritten));
    }
    this.emitter.fire();
  }

  dispose(): void {
    this.watcher?.dispose();
    this.emitter.dispose();
  }
}
