/**
 * The sortable table of training rows, one component for every list in the panel (helpful,
 * harmful, flagged), parameterised by its columns. Clicking or pressing Enter on a row opens it
 * in the training file; the arrow keys, Home and End move between rows.
 */
import { h, srOnly, type Child } from './dom';
import { ariaSort, nextSort, sortRows, type TableId } from './model';
import { render, reveal, saveUi, ui } from './state';

export interface Column<T> {
  key: string;
  label: string;
  /** The label in narrow panels. */
  short?: string;
  /** Visible second line of the header: units and sign. */
  hint?: string;
  title: string;
  num?: boolean;
  /** With a detail row, this cell spans both rows (leading columns only). */
  span?: boolean;
  cell: (r: T, rank: number) => Child | Child[];
}

export interface TableSpec<T extends { row: number; line: number }> {
  id: string;
  table: TableId;
  caption: [string, string];
  cols: Column<T>[];
  /** In rank order; the table shows them in the order of its sort. */
  rows: readonly T[];
  /** The sort value of each sortable column by key; the rank column always sorts. */
  values: Readonly<Record<string, (r: T) => number>>;
  rowClass: string;
  empty: string;
  /** Content of a full-width row under each row (the flagged rows' reasons). */
  detail?: (r: T) => Child;
}

/** Read by screen readers for every row (aria-describedby); main.ts puts it in the page once. */
export const rowHint = h(
  'span',
  { id: 'row-hint', class: 'sr-only' },
  'Press Enter to open this row in the training file.',
);

export function rowTable<T extends { row: number; line: number }>(spec: TableSpec<T>): HTMLElement {
  const sort = ui.sort[spec.table];
  const head = h(
    'tr',
    null,
    ...spec.cols.map((c) => {
      const th = h('th', { class: `col-${c.key}${c.num ? ' num' : ''}`, attrs: { scope: 'col', title: c.title } });
      const hint = c.hint ? h('span', { class: 'th-hint' }, c.hint) : null;
      // Only the rank and the columns with a sort value sort.
      if (c.key !== 'rank' && !Object.hasOwn(spec.values, c.key)) {
        th.append(c.key === 'thumb' ? srOnly(c.label) : h('span', { class: 'th-top' }, headerLabel(c)));
        if (hint) th.append(hint);
        return th;
      }
      const state = ariaSort(sort, c.key);
      th.setAttribute('aria-sort', state);
      const icon = h(
        'span',
        { class: `sort-icon ${state}`, attrs: { 'aria-hidden': 'true' } },
        state === 'ascending' ? '▲' : state === 'descending' ? '▼' : '⇅',
      );
      const label = headerLabel(c);
      th.append(
        h(
          'button',
          {
            class: 'sort',
            attrs: { type: 'button', title: `${c.title}. Click to sort.` },
            data: { focusKey: `${spec.table}-sort-${c.key}` },
            on: {
              click: () => {
                ui.sort[spec.table] =
                  c.key === 'rank' && sort?.key === 'rank' && sort.dir === 'desc'
                    ? null
                    : nextSort(sort ?? null, spec.table, c.key);
                saveUi();
                render();
              },
            },
          },
          h('span', { class: 'th-top' }, ...(c.num ? [icon, label] : [label, icon])),
          hint,
        ),
      );
      return th;
    }),
  );

  const ranks = new Map(spec.rows.map((r, i) => [r, i + 1]));
  const rows = sortRows(spec.rows, sort, spec.values);
  const bodies: HTMLTableSectionElement[] = [];
  if (rows.length === 0) {
    bodies.push(
      h(
        'tbody',
        null,
        h('tr', { class: 'empty-row' }, h('td', { attrs: { colspan: spec.cols.length }, class: 'muted' }, spec.empty)),
      ),
    );
  }
  const plain = spec.detail ? null : h('tbody', null);
  if (plain) bodies.push(plain);
  for (const r of rows) {
    const { row, line } = r;
    const open = (target: Element) => {
      // Selecting text to copy is not a click on the row.
      const sel = window.getSelection();
      if (sel && !sel.isCollapsed && sel.anchorNode && target.contains(sel.anchorNode)) return;
      reveal('train', row, line);
    };
    const tr = h('tr', {
      class: `clickable ${spec.rowClass}`,
      attrs: { tabindex: 0, 'aria-describedby': 'row-hint' },
      data: { row, line, focusKey: `${spec.table}-row-${row}` },
      on: { click: () => open(tr), keydown: (e) => onRowKey(e, tr, row, line) },
    });
    const rank = ranks.get(r) ?? 0;
    const detail = spec.detail?.(r) ?? null;
    for (const c of spec.cols) {
      const v = c.cell(r, rank);
      tr.append(
        h(
          'td',
          { class: `col-${c.key}${c.num ? ' num' : ''}`, attrs: { rowspan: detail && c.span ? 2 : null } },
          ...(Array.isArray(v) ? v : [v]),
        ),
      );
    }
    if (plain) {
      plain.append(tr);
      continue;
    }
    // One tbody per item: the row and, under it, its details across the unspanned columns.
    const item = h('tbody', { class: 'item' }, tr);
    if (detail) {
      const spanned = spec.cols.filter((c) => c.span).length;
      const dtr = h(
        'tr',
        { class: 'detail', on: { click: () => open(dtr) } },
        h('td', { attrs: { colspan: spec.cols.length - spanned } }, detail),
      );
      item.append(dtr);
    }
    bodies.push(item);
  }
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { id: spec.id, class: `rows ${spec.rowClass}-rows` },
      h(
        'caption',
        null,
        h('span', { class: 'caption-title' }, spec.caption[0]),
        h('span', { class: 'caption-sub' }, ` — ${spec.caption[1]}`),
      ),
      h('thead', null, head),
      ...bodies,
    ),
  );
}

function headerLabel<T>(c: Column<T>): HTMLElement {
  if (!c.short) return h('span', { class: 'th-label' }, c.label);
  return h(
    'span',
    { class: 'th-label' },
    h('span', { class: 'long' }, c.label),
    h('span', { class: 'short' }, c.short),
  );
}

function onRowKey(e: KeyboardEvent, tr: HTMLTableRowElement, row: number, line: number): void {
  if (e.target !== tr) return; // a button inside handles its own keys
  const rows = Array.from(tr.closest('table')?.querySelectorAll<HTMLTableRowElement>('tr.clickable') ?? []);
  const i = rows.indexOf(tr);
  const move = (j: number) => {
    e.preventDefault();
    rows[Math.max(0, Math.min(rows.length - 1, j))]?.focus();
  };
  switch (e.key) {
    case 'Enter':
    case ' ':
      e.preventDefault();
      reveal('train', row, line);
      break;
    case 'ArrowDown':
      move(i + 1);
      break;
    case 'ArrowUp':
      move(i - 1);
      break;
    case 'Home':
      move(0);
      break;
    case 'End':
      move(rows.length - 1);
      break;
  }
}
