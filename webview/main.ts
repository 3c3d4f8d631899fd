/**
 * The Influence Lens panel: plain DOM on VS Code's theme variables. Talks to the host only
 * through the messages of src/protocol/webview.ts (./state.ts); each card of the page is built by
 * a file under ./sections/, the row tables by ./table.ts; pure logic lives in ./model.ts.
 */
import { h } from './dom';
import { renderAudit, exportReplied } from './sections/audit';
import { renderEmpty } from './sections/empty';
import { collapseFlip, renderFlip } from './sections/flip';
import { detachPlot, renderPlot } from './sections/histogram';
import { renderInfluence } from './sections/influence';
import { renderRowDetail, setRowDetail } from './sections/row';
import { renderTestRow } from './sections/test';
import { connect, panel } from './state';
import { rowHint } from './table';

const content = h('div', { id: 'content' });

function mount(): void {
  document.body.classList.add('influence-lens');
  // The host page's shell is <main id="app">; make one when it is missing (e.g. a test page).
  let app = document.getElementById('app');
  if (!app) {
    app = h('main', { id: 'app' });
    document.body.append(app);
  }
  // The content is rebuilt on every state: as a live region it would be read out in full each
  // time. Only #export-result is live.
  app.removeAttribute('aria-live');
  app.replaceChildren(content, rowHint);
  render();
  connect({
    render,
    newTestRow: collapseFlip,
    reply: exportReplied,
    rowDetail: (m) => {
      setRowDetail(m.detail);
      render();
      document.getElementById('row-detail')?.scrollIntoView({ block: 'start' });
    },
  });
}

/**
 * The whole page is rebuilt from the state; focus is put back on the element with the same
 * data-focus-key.
 */
function render(): void {
  const focusKey = (document.activeElement as HTMLElement | null)?.dataset?.focusKey;
  detachPlot();
  content.replaceChildren();
  const detail = renderRowDetail(render);
  if (detail) content.append(detail);
  if (!panel) {
    content.append(h('p', { class: 'loading muted' }, 'Loading…'));
  } else {
    const ex = panel.explain;
    if (ex) {
      content.append(renderTestRow(ex), renderFlip(ex), renderInfluence(ex), renderPlot(ex));
    } else {
      content.append(renderEmpty());
    }
    content.append(renderAudit(panel.audit));
  }
  if (focusKey) {
    const el = Array.from(document.querySelectorAll<HTMLElement>('[data-focus-key]')).find(
      (e) => e.dataset.focusKey === focusKey,
    );
    el?.focus({ preventScroll: true });
  }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mount);
else mount();
