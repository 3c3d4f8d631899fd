/** A Parquet or Arrow row, read-only: its fields and its image (opened by clicking such a row). */
import type { RowDetail } from '../../src/protocol/webview';
import { h, imageThumb } from '../dom';
import { basename } from '../model';

let detail: RowDetail | null = null;

/** Shows a row (the host's reply to a click on it); render() draws it. */
export function setRowDetail(d: RowDetail | null): void {
  detail = d;
}

export function renderRowDetail(close: () => void): HTMLElement | null {
  if (!detail) return null;
  const d = detail;
  return h(
    'section',
    { id: 'row-detail', class: 'card row-detail', attrs: { 'aria-labelledby': 'row-detail-title' } },
    h(
      'div',
      { class: 'section-head' },
      h('h2', { id: 'row-detail-title' }, `${d.title}: row ${d.fileRow} of ${basename(d.file)}`),
      h(
        'button',
        {
          class: 'secondary',
          attrs: { type: 'button', title: 'Close this row view' },
          data: { focusKey: 'row-detail-close' },
          on: {
            click: () => {
              detail = null;
              close();
            },
          },
        },
        'Close',
      ),
    ),
    h(
      'div',
      { class: 'row-detail-body' },
      d.image ? imageThumb(d.image, 128, `${d.title}'s image`, 'thumb-large') : null,
      h(
        'table',
        { class: 'kv', id: 'row-detail-fields' },
        h('caption', { class: 'sr-only' }, 'Fields of the row'),
        h(
          'tbody',
          null,
          ...d.fields.map((f) => h('tr', null, h('th', { attrs: { scope: 'row' } }, f.name), h('td', null, f.value))),
        ),
      ),
    ),
    h('p', { class: 'muted small', attrs: { title: d.file } }, `Read-only: ${d.file}, row ${d.fileRow} (0-based).`),
  );
}
