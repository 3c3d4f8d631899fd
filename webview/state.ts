/**
 * The panel's state and its channel to the host: the last PanelState the host sent, the UI
 * choices kept with vscode.setState (so they survive VS Code reloading a hidden panel), and the
 * messages both ways.
 */
import { isHostMessage, type HostMessage, type PanelState, type WebviewMessage } from '../src/protocol/webview';
import { parseUiState, type UiState } from './model';

interface VsCodeApi {
  postMessage(message: WebviewMessage): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();

/** What the host last sent; null until its first state arrives. */
export let panel: PanelState | null = null;
export const ui: UiState = parseUiState(vscode.getState());

export function saveUi(): void {
  vscode.setState(ui);
}

export function post(m: WebviewMessage): void {
  vscode.postMessage(m);
}

export function reveal(file: 'train' | 'test', row: number, line: number): void {
  post({ type: 'reveal', file, row, line });
}

/** What the page does when the host speaks; main.ts wires the sections in. */
export interface Handlers {
  /** Rebuilds the page from `panel` and `ui`. */
  render(): void;
  /** Another test row is explained (before the render). */
  newTestRow(): void;
  reply(m: Extract<HostMessage, { type: 'reply' }>): void;
  /** A Parquet/Arrow row to show read-only. */
  rowDetail(m: Extract<HostMessage, { type: 'rowDetail' }>): void;
}

let handlers: Handlers | null = null;
let scrollRestored = false;

/** Rebuilds the page after a UI change (a sort, a toggle). */
export function render(): void {
  handlers?.render();
}

const testKey = (p: PanelState | null) => (p?.explain ? `${p.explain.test.path}#${p.explain.test.row}` : '');

function onMessage(h: Handlers, m: unknown): void {
  if (!isHostMessage(m)) return;
  switch (m.type) {
    case 'state': {
      const before = testKey(panel);
      panel = m.state;
      if (testKey(panel) !== before) h.newTestRow();
      h.render();
      if (!scrollRestored) {
        // Back where the user was before VS Code reloaded the hidden panel.
        scrollRestored = true;
        if (ui.scrollY > 0) requestAnimationFrame(() => window.scrollTo(0, ui.scrollY));
      }
      break;
    }
    case 'reply':
      h.reply(m);
      break;
    case 'rowDetail':
      h.rowDetail(m);
      break;
  }
}

/** Listens to the host and keeps the scroll position, then tells the host the panel is ready. */
export function connect(h: Handlers): void {
  handlers = h;
  window.addEventListener('message', (e: MessageEvent) => onMessage(h, e.data));
  let pending = false;
  window.addEventListener(
    'scroll',
    () => {
      if (pending || !scrollRestored) return;
      pending = true;
      setTimeout(() => {
        pending = false;
        ui.scrollY = Math.round(window.scrollY);
        saveUi();
      }, 200);
    },
    { passive: true },
  );
  post({ type: 'ready' });
}
