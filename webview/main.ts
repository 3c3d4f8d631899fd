/**
 * The Influence Lens panel: plain DOM on VS Code's theme variables. Talks to the host only
 * through the messages of src/protocol/webview.ts; pure logic lives in ./model.ts.
 */
import { PendingRequests } from '../src/protocol/message';
import { isHostMessage, type AuditView, type ExplainView, type FlaggedRow, type HostMessage, type PanelState, type Ranking, type RowView, type WebviewMessage } from '../src/protocol/webview';
import { className, describeLossChange, describeReason, fmtSigned } from '../src/protocol/words';
import { h, srOnly, thumbnail, type Child } from './dom';
import { drawHistogram } from './histogram';
import {
  ariaSort,
  basename,
  drawable,
  featureEntries,
  flipSentence,
  FLIP_SHOWN,
  histogramSummary,
  lossChangeText,
  magnitudePercent,
  nextSort,
  parseUiState,
  plural,
  probabilityBars,
  sortFlaggedRows,
  sortInfluenceRows,
  type TableId,
  type UiState,
} from './model';

interface VsCodeApi {
  postMessage(message: WebviewMessage): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();
const post = (m: WebviewMessage) => vscode.postMessage(m);

let panel: PanelState | null = null;
let ui: UiState = parseUiState(vscode.getState());
/** Export requests; only the latest one's reply is shown. */
const exports = new PendingRequests<{ ok: boolean; message: string }>();
let resizeObserver: ResizeObserver | null = null;
let flipExpanded = false;
let scrollRestored = false;

const saveUi = () => vscode.setState(ui);

// ---------------------------------------------------------------------------------------------
// Page skeleton: the live region exists from the start so that screen readers announce changes.

const content = h('div', { id: 'content' });
const rowHint = h('span', { id: 'row-hint', class: 'sr-only' }, 'Press Enter to open this row in the training file.');
// Kept across renders (moved into each new audit section) so that a re-render does not re-announce it.
const exportResultEl = h('p', { id: 'export-result', class: 'export-result', attrs: { role: 'status', 'aria-live': 'polite' } });

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
  window.addEventListener('message', (e: MessageEvent) => onMessage(e.data));
  let pending = false;
  window.addEventListener('scroll', () => {
    if (pending || !scrollRestored) return;
    pending = true;
    setTimeout(() => {
      pending = false;
      ui.scrollY = Math.round(window.scrollY);
      saveUi();
    }, 200);
  }, { passive: true });
  post({ type: 'ready' });
}

function onMessage(m: unknown): void {
  if (!isHostMessage(m)) return;
  const msg: HostMessage = m;
  switch (msg.type) {
    case 'state': {
      const before = panel?.explain ? `${panel.explain.test.path}#${panel.explain.test.row}` : '';
      panel = msg.state;
      const after = panel.explain ? `${panel.explain.test.path}#${panel.explain.test.row}` : '';
      if (before !== after) flipExpanded = false;
      render();
      if (!scrollRestored) {
        // Back where the user was before VS Code reloaded the hidden panel.
        scrollRestored = true;
        if (ui.scrollY > 0) requestAnimationFrame(() => window.scrollTo(0, ui.scrollY));
      }
      break;
    }
    case 'reply': {
      const result = { ok: msg.ok, message: msg.message ?? (msg.ok ? 'Cleaned dataset saved.' : 'The cleaned dataset was not saved.') };
      const waiting = exports.take(msg.requestId);
      if (waiting) waiting.resolve(result);
      // This page asked nothing yet: VS Code reloaded the panel while an export it asked for ran.
      else if (exports.latest === 0) showExportResult(result);
      break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering: the whole page is rebuilt from `panel` and `ui`; focus is put back on the element
// with the same data-focus-key.

function render(): void {
  const focusKey = (document.activeElement as HTMLElement | null)?.dataset?.focusKey;
  resizeObserver?.disconnect();
  resizeObserver = null;
  content.replaceChildren();
  if (!panel) {
    content.append(h('p', { class: 'loading muted' }, 'Loading…'));
  } else {
    const ex = panel.explain;
    if (ex) {
      content.append(renderHeader(ex), renderFlip(ex), renderInfluence(ex), renderPlot(ex));
    } else {
      content.append(renderEmpty());
    }
    content.append(renderAudit(panel.audit));
  }
  if (focusKey) {
    const el = Array.from(document.querySelectorAll<HTMLElement>('[data-focus-key]')).find((e) => e.dataset.focusKey === focusKey);
    el?.focus({ preventScroll: true });
  }
}

function reveal(file: 'train' | 'test', row: number, line: number): void {
  post({ type: 'reveal', file, row, line });
}

/** A button that looks like a link and opens a row of the training file. */
function rowLink(row: number, line: number, text: string, trainPath: string, tabbable = true): HTMLButtonElement {
  return h('button', {
    class: 'link',
    attrs: { type: 'button', title: `Open row ${row} (line ${line}) of ${basename(trainPath)}`, tabindex: tabbable ? null : -1 },
    data: tabbable ? { focusKey: `link-${row}-${text}` } : {},
    on: { click: (e) => { e.stopPropagation(); reveal('train', row, line); } },
  }, text);
}

function section(id: string, title: string, ...children: Child[]): HTMLElement {
  const headingId = `${id}-title`;
  return h('section', { id, class: 'card', attrs: { 'aria-labelledby': headingId } }, h('h2', { id: headingId }, title), ...children);
}

// ---------------------------------------------------------------------------------------------
// Empty state

function renderEmpty(): HTMLElement {
  const cmd = (t: string) => h('strong', { class: 'command' }, t);
  return h('section', { id: 'empty-state', class: 'card empty', attrs: { 'aria-labelledby': 'empty-title' } },
    h('h2', { id: 'empty-title' }, 'No prediction explained yet'),
    h('p', null, 'Influence Lens shows which training rows made your ONNX classifier predict what it did, and which rows it only memorizes.'),
    h('ol', { class: 'steps' },
      h('li', null, 'In the Explorer, right-click your ', h('code', null, '.onnx'), ' model and choose ', cmd('Use as Model'),
        ', then right-click the CSV, TSV or JSONL data files and choose ', cmd('Use as Training Data'), ' and ', cmd('Use as Test Data'), '.'),
      h('li', null, 'Open the test file, right-click a row and choose ', cmd('Explain This Row’s Prediction'),
        ' (or run ', cmd('Influence Lens: Explain Test Row by Number…'), ' from the Command Palette).'),
      h('li', null, 'To look for mislabelled and memorized rows, right-click the training file and choose ', cmd('Audit Training Data'), '.')),
    h('p', { class: 'muted' }, 'No data at hand? Run ', cmd('Influence Lens: Open the Bundled Sample'), ' from the Command Palette.'));
}

// ---------------------------------------------------------------------------------------------
// Header: the test row

function renderHeader(ex: ExplainView): HTMLElement {
  const t = ex.test;
  const cls = (c: number) => className(ex.classes, c);
  const wrong = t.labelled && t.label !== t.predicted;

  const picture = ex.image && drawable(t.features, ex.image)
    ? h('figure', { class: 'test-image' },
      thumbnail(t.features, ex.image, 112, `Test row ${t.row} as a ${ex.image.height}×${ex.image.width} image`, 'thumb-large'),
      h('figcaption', { class: 'muted' }, `${ex.image.height}×${ex.image.width}`))
    : renderFeatureTable(ex);

  const title = t.labelled
    ? `Test row ${t.row}: predicted ${cls(t.predicted)}, labelled ${cls(t.label)}`
    : `Test row ${t.row}: predicted ${cls(t.predicted)}`;

  const facts = h('dl', { class: 'facts' },
    fact('True label', t.labelled
      ? [cls(t.label), wrong ? h('span', { class: 'badge bad' }, 'misclassified') : h('span', { class: 'badge good' }, 'correct')]
      : [h('span', { class: 'muted' }, 'no label: explaining the predicted class')]),
    fact('Predicted', [cls(t.predicted)]),
    fact('Loss', [t.loss.toPrecision(3), h('span', { class: 'unit' }, ' nats')],
      `cross-entropy of the ${t.labelled ? 'true label' : 'predicted class'} for this row (nats)`),
    fact('Margin', [t.margin.toPrecision(3), h('span', { class: 'unit' }, ` over ${cls(t.runnerUp)}`)],
      `logit of the predicted class ${cls(t.predicted)} minus the logit of the runner-up ${cls(t.runnerUp)}`),
  );

  const probs = probabilityBars(t.probabilities, t.predicted, t.labelled ? t.label : null, ex.classes);
  const probList = h('ul', { class: 'probs', attrs: { 'aria-label': 'Predicted probability of each class' } },
    ...probs.bars.map((b) => {
      const fill = h('span', { class: 'prob-fill' });
      fill.style.width = `${b.percent}%`;
      const tags = [b.predicted ? 'predicted' : null, b.label ? 'label' : null].filter((x): x is string => x !== null);
      return h('li', { class: `prob${b.predicted ? ' is-predicted' : ''}${b.label ? ' is-label' : ''}` },
        h('span', { class: 'prob-name' }, b.name),
        h('span', { class: 'prob-track', attrs: { 'aria-hidden': 'true' } }, fill),
        h('span', { class: 'prob-value' }, b.text),
        h('span', { class: 'prob-tags' }, ...tags.map((x) => h('span', { class: `tag tag-${x}` }, x))),
      );
    }),
    probs.hidden > 0
      ? h('li', { class: 'prob more muted' }, `… and ${plural(probs.hidden, 'more class')} (${(probs.hiddenMass * 100).toFixed(1)}% together)`)
      : null,
  );

  const meta = h('p', { class: 'meta' },
    h('span', { attrs: { title: ex.model.path } }, basename(ex.model.path)),
    ` (layer ${ex.model.layer}, ${ex.model.parameters.toLocaleString('en-US')} head parameters, outputs ${ex.model.output})`,
    sep(),
    h('span', { attrs: { title: 'λ of the damped objective (1/n) Σ L_i + (λ/2)‖θ‖²' } }, `damping λ = ${ex.damping.toPrecision(3)}`),
    ` (${ex.dampingRule})`,
    sep(),
    `self-influence: ${ex.selfInfluenceMethod === 'exact' ? 'exact' : 'EK-FAC approximation'}`,
    sep(),
    h('span', { attrs: { title: ex.train.path } }, `${plural(ex.train.rows, 'training row')} in ${basename(ex.train.path)}`),
    sep(),
    `${ex.seconds.toFixed(ex.seconds < 10 ? 2 : 1)} s`,
  );

  const testLink = h('button', {
    class: 'link',
    attrs: { type: 'button', title: `Open row ${t.row} (line ${t.line}) of ${basename(t.path)}` },
    data: { focusKey: 'test-link' },
    on: { click: () => reveal('test', t.row, t.line) },
  }, `line ${t.line}`);

  return h('section', { id: 'explain-header', class: 'card header', attrs: { 'aria-labelledby': 'explain-title' } },
    h('div', { class: 'header-grid' },
      picture,
      h('div', { class: 'header-main' },
        h('h2', { id: 'explain-title' }, title),
        h('p', { class: 'where muted' }, h('span', { attrs: { title: t.path } }, basename(t.path)), ` · row ${t.row} · `, testLink),
        facts),
      h('div', { class: 'header-probs' }, h('h3', { class: 'mini-title' }, 'Class probabilities'), probList)),
    meta);
}

function sep(): HTMLSpanElement {
  return h('span', { class: 'sep' }, ' · ');
}

function fact(term: string, value: Child[], title?: string): HTMLDivElement {
  return h('div', { class: 'fact' }, h('dt', title ? { attrs: { title } } : null, term), h('dd', title ? { attrs: { title } } : null, ...value));
}

function renderFeatureTable(ex: ExplainView): HTMLElement {
  const { entries, more } = featureEntries(ex.test.featureNames, ex.test.features, 12);
  return h('div', { class: 'test-features' },
    h('table', { id: 'test-features', class: 'kv' },
      h('caption', null, `Features (${ex.test.features.length})`),
      h('tbody', null,
        ...entries.map((e) => h('tr', null, h('th', { attrs: { scope: 'row', title: e.name } }, e.name), h('td', { class: 'num' }, e.value))),
        more > 0 ? h('tr', { class: 'more' }, h('td', { attrs: { colspan: 2 }, class: 'muted' }, `… and ${more.toLocaleString('en-US')} more`)) : null)));
}

// ---------------------------------------------------------------------------------------------
// Flip set

function renderFlip(ex: ExplainView): HTMLElement {
  const sentence = flipSentence(ex.flip, ex.test.predicted, ex.classes);
  const body: Child[] = [h('p', { class: 'flip-sentence' }, sentence)];
  if (ex.flip && ex.flip.rows.length > 0) {
    const all = ex.flip.rows;
    const shown = flipExpanded ? all : all.slice(0, FLIP_SHOWN);
    const more = all.length - shown.length;
    body.push(
      h('ul', { id: 'flip-rows', class: 'chips' },
        ...shown.map((r) => h('li', { data: { row: r.row, line: r.line } }, rowLink(r.row, r.line, `row ${r.row} · line ${r.line}`, ex.train.path))),
        more > 0
          ? h('li', null, h('button', {
            class: 'link show-all',
            attrs: { type: 'button' },
            data: { focusKey: 'flip-show-all' },
            on: { click: () => { flipExpanded = true; render(); } },
          }, `show all ${all.length.toLocaleString('en-US')} rows (${more.toLocaleString('en-US')} more)`))
          : null),
      h('p', { class: 'muted small' },
        `First-order estimate: removing ${ex.flip.rows.length === 1 ? 'it' : 'them together'} and refitting would push the margin of ${className(ex.classes, ex.test.predicted)} over ${className(ex.classes, ex.flip.newClass)} below zero. The set is the smallest for any class, among at most 5% of the training rows.`),
    );
  }
  return h('section', { id: 'flip-section', class: `card flip${ex.flip ? ' has-flip' : ''}`, attrs: { 'aria-labelledby': 'flip-title' } },
    h('h2', { id: 'flip-title' }, 'What would flip this prediction'), ...body);
}

// ---------------------------------------------------------------------------------------------
// Helpful and harmful tables

interface Column<T> {
  key: string;
  label: string;
  /** The label in narrow panels. */
  short?: string;
  /** Visible second line of the header: units and sign. */
  hint?: string;
  title: string;
  num?: boolean;
  sortable: boolean;
  /** With a detail row, this cell spans both rows (leading columns only). */
  span?: boolean;
  cell: (r: T, rank: number) => Child | Child[];
}

function currentRanking(): Ranking {
  return ui.ranking ?? panel?.ranking ?? 'influence';
}

function setRanking(r: Ranking): void {
  if (currentRanking() === r && ui.ranking === r) return;
  ui.ranking = r;
  saveUi();
  post({ type: 'setRanking', ranking: r });
  render();
}

function renderInfluence(ex: ExplainView): HTMLElement {
  const ranking = currentRanking();
  const lists = ranking === 'relative' ? ex.byRelative : ex.byInfluence;
  const toggle = h('div', { class: 'segmented', attrs: { role: 'group', 'aria-label': 'Rank rows by' } },
    h('span', { class: 'segmented-label', attrs: { 'aria-hidden': 'true' } }, 'Rank by'),
    ...(['influence', 'relative'] as const).map((r) =>
      h('button', {
        id: `rank-${r}`,
        attrs: { type: 'button', 'aria-pressed': String(ranking === r),
          title: r === 'influence'
            ? 'rank by the first-order change in the test loss if the row were removed'
            : 'rank by influence ÷ √self-influence (RelatIF), so rows that are influential everywhere do not dominate' },
        data: { focusKey: `rank-${r}` },
        on: { click: () => setRanking(r) },
      }, r === 'influence' ? 'influence' : 'relative influence')));

  const explainer = h('p', { class: 'explainer muted' },
    'Each number estimates what happens to this test row’s prediction if one training row were removed and the model refit: ',
    h('strong', null, 'first-order estimates'),
    ' from influence functions (the Newton value also accounts for the row’s own curvature). ',
    ranking === 'relative' ? 'Ranked by relative influence, which discounts rows that are influential for every prediction. ' : '',
    'Click a row or press Enter on it to open it in the training file.');

  return h('section', { id: 'influence', class: 'card', attrs: { 'aria-labelledby': 'influence-title' } },
    h('div', { class: 'section-head' },
      h('h2', { id: 'influence-title' }, 'Training rows behind this prediction ', h('span', { class: 'tag tag-estimate' }, 'first-order estimates')),
      toggle),
    explainer,
    influenceTable(ex, 'helpful', lists.helpful),
    influenceTable(ex, 'harmful', lists.harmful));
}

function influenceColumns(ex: ExplainView, rows: readonly RowView[]): Column<RowView>[] {
  const cls = (c: number) => className(ex.classes, c);
  const pred = cls(ex.test.predicted);
  const runner = cls(ex.test.runnerUp);
  const lossValues = rows.map((r) => r.lossChangeIfRemoved);
  const cols: Column<RowView>[] = [
    { key: 'rank', label: '#', title: `rank in this list (${currentRanking() === 'relative' ? 'by relative influence' : 'by influence'}); click to restore the rank order`, num: true, sortable: true, cell: (_r, rank) => rank },
  ];
  if (ex.image) {
    const shape = ex.image;
    cols.push({ key: 'thumb', label: 'Image', title: 'the training row drawn as an image', sortable: false,
      cell: (r) => (drawable(r.features, shape) ? thumbnail(r.features, shape, 32, `Row ${r.row} as an image`) : h('span', { class: 'muted' }, '–')) });
  }
  cols.push(
    rowColumn(ex.train.path),
    { key: 'label', label: 'Label', title: 'the label of the training row', sortable: true, cell: (r) => cls(r.label) },
    { key: 'predicted', label: 'Predicted', short: 'Pred.', title: 'what the model predicts for the training row', sortable: true,
      cell: (r) => predictedCell(r.label, r.predicted, cls) },
    { key: 'lossChange', label: 'Δ test loss if removed', short: 'Δ loss if removed', hint: 'nats · +\u00a0=\u00a0helps', num: true, sortable: true,
      title: 'first-order estimate of the change in this test row’s loss (nats) if the row were removed and the model refit; positive = the row helps, negative = it hurts. Below it, the Newton (leverage-corrected) estimate.',
      cell: (r) => lossCell(r, lossValues) },
    { key: 'relative', label: 'Relative influence', short: 'Relative', hint: '−\u00a0=\u00a0helps', num: true, sortable: true,
      title: 'influence ÷ √self-influence (RelatIF): the influence on this test loss, discounted for rows that are influential everywhere; negative = upweighting the row lowers the test loss (it helps), positive = it hurts',
      cell: (r) => h('span', { class: signClass(-r.relativeInfluence), attrs: { title: `relative influence ${fmtSigned(r.relativeInfluence)}; self-influence ${r.selfInfluence.toPrecision(3)}` } }, fmtSigned(r.relativeInfluence)) },
    { key: 'margin', label: 'Δ margin if removed', short: 'Δ margin', hint: `−\u00a0=\u00a0towards ${runner}`, num: true, sortable: true,
      title: `first-order change of the margin of ${pred} over the runner-up ${runner} (logits) if the row were removed; negative = removing it pushes the prediction towards ${runner}`,
      cell: (r) => h('span', { attrs: { title: marginWords(r.classificationInfluence, runner) } }, fmtSigned(r.classificationInfluence)) },
  );
  return cols;
}

/** The row number with its "line N" link under it (lines grow with rows: one sort serves both). */
function rowColumn<T extends { row: number; line: number }>(trainPath: string): Column<T> {
  return {
    key: 'row', label: 'Row', hint: 'and line', num: true, sortable: true,
    title: '0-based record number in the training file (after the header), and the 1-based line on which it starts',
    cell: (r) => [h('span', { class: 'row-id' }, r.row), rowLink(r.row, r.line, `line ${r.line}`, trainPath, false)],
  };
}

function marginWords(x: number, runner: string): string {
  if (x < 0) return `removing this row would shrink the margin by ${fmtSigned(-x).slice(1)}, towards ${runner} (first-order)`;
  if (x > 0) return `removing this row would widen the margin by ${fmtSigned(x).slice(1)} (first-order)`;
  return 'removing this row would not change the margin (first-order)';
}

function signClass(x: number): string {
  return x > 0 ? 'pos' : x < 0 ? 'neg' : '';
}

function predictedCell(label: number, predicted: number, cls: (c: number) => string): Child[] {
  if (label === predicted) return [cls(predicted)];
  return [h('span', { class: 'mismatch', attrs: { title: `the model predicts ${cls(predicted)}, not the row’s label ${cls(label)}` } },
    cls(predicted), h('span', { class: 'mismatch-mark', attrs: { 'aria-hidden': 'true' } }, '≠'), srOnly(', not the label'))];
}

function lossCell(r: RowView, column: readonly number[]): HTMLElement {
  const text = lossChangeText(r);
  const bar = h('span', { class: `mag ${signClass(r.lossChangeIfRemoved)}`, attrs: { 'aria-hidden': 'true' } });
  bar.style.width = `${magnitudePercent(r.lossChangeIfRemoved, column)}%`;
  return h('div', { class: 'loss-cell', attrs: { title: `${describeLossChange(r.lossChangeIfRemoved)}. Newton (leverage-corrected) estimate: ${fmtSigned(r.lossChangeIfRemovedNewton)}.` } },
    h('span', { class: `num-main ${signClass(r.lossChangeIfRemoved)}` }, text.first),
    h('span', { class: 'num-sub' }, `(${text.newton})`),
    h('span', { class: 'mag-track', attrs: { 'aria-hidden': 'true' } }, bar));
}

function influenceTable(ex: ExplainView, table: 'helpful' | 'harmful', rows: readonly RowView[]): HTMLElement {
  const cols = influenceColumns(ex, rows);
  const caption = table === 'helpful'
    ? ['Most helpful', 'removing them would raise this row’s loss']
    : ['Most harmful', 'removing them would lower this row’s loss'];
  const sort = ui.sort[table];
  const sorted = sortInfluenceRows(rows, sort);
  const rank = new Map(rows.map((r, i) => [r, i + 1]));
  return dataTable({
    id: `${table}-table`,
    table,
    caption,
    cols,
    rows: sorted,
    rank: (r) => rank.get(r) ?? 0,
    rowKey: (r) => ({ row: r.row, line: r.line }),
    rowClass: table,
    empty: table === 'helpful' ? 'No training row helps this prediction.' : 'No training row hurts this prediction.',
  });
}

interface TableSpec<T> {
  id: string;
  table: TableId;
  caption: [string, string];
  cols: Column<T>[];
  rows: T[];
  rank: (r: T) => number;
  rowKey: (r: T) => { row: number; line: number };
  rowClass: string;
  empty: string;
  /** Content of a full-width row under each row (the flagged rows' reasons). */
  detail?: (r: T) => Child;
}

function dataTable<T>(spec: TableSpec<T>): HTMLElement {
  const sort = ui.sort[spec.table];
  const head = h('tr', null, ...spec.cols.map((c) => {
    const th = h('th', { class: `col-${c.key}${c.num ? ' num' : ''}`, attrs: { scope: 'col', title: c.title } });
    const hint = c.hint ? h('span', { class: 'th-hint' }, c.hint) : null;
    if (!c.sortable) {
      th.append(c.key === 'thumb' ? srOnly(c.label) : h('span', { class: 'th-top' }, headerLabel(c)));
      if (hint) th.append(hint);
      return th;
    }
    const state = ariaSort(sort, c.key);
    th.setAttribute('aria-sort', state);
    const icon = h('span', { class: `sort-icon ${state}`, attrs: { 'aria-hidden': 'true' } }, state === 'ascending' ? '▲' : state === 'descending' ? '▼' : '⇅');
    const label = headerLabel(c);
    th.append(h('button', {
      class: 'sort',
      attrs: { type: 'button', title: `${c.title}. Click to sort.` },
      data: { focusKey: `${spec.table}-sort-${c.key}` },
      on: { click: () => {
        ui.sort[spec.table] = c.key === 'rank' && sort?.key === 'rank' && sort.dir === 'desc' ? null : nextSort(sort ?? null, spec.table, c.key);
        saveUi();
        render();
      } },
    }, h('span', { class: 'th-top' }, ...(c.num ? [icon, label] : [label, icon])), hint));
    return th;
  }));

  const bodies: HTMLTableSectionElement[] = [];
  if (spec.rows.length === 0) {
    bodies.push(h('tbody', null, h('tr', { class: 'empty-row' }, h('td', { attrs: { colspan: spec.cols.length }, class: 'muted' }, spec.empty))));
  }
  const plain = spec.detail ? null : h('tbody', null);
  if (plain) bodies.push(plain);
  for (const r of spec.rows) {
    const { row, line } = spec.rowKey(r);
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
    const rank = spec.rank(r);
    const detail = spec.detail?.(r) ?? null;
    for (const c of spec.cols) {
      const v = c.cell(r, rank);
      tr.append(h('td', { class: `col-${c.key}${c.num ? ' num' : ''}`, attrs: { rowspan: detail && c.span ? 2 : null } }, ...(Array.isArray(v) ? v : [v])));
    }
    if (plain) {
      plain.append(tr);
      continue;
    }
    // One tbody per item: the row and, under it, its details across the unspanned columns.
    const item = h('tbody', { class: 'item' }, tr);
    if (detail) {
      const spanned = spec.cols.filter((c) => c.span).length;
      const dtr = h('tr', { class: 'detail', on: { click: () => open(dtr) } },
        h('td', { attrs: { colspan: spec.cols.length - spanned } }, detail));
      item.append(dtr);
    }
    bodies.push(item);
  }
  return h('div', { class: 'table-wrap' },
    h('table', { id: spec.id, class: `rows ${spec.rowClass}-rows` },
      h('caption', null, h('span', { class: 'caption-title' }, spec.caption[0]), h('span', { class: 'caption-sub' }, ` — ${spec.caption[1]}`)),
      h('thead', null, head),
      ...bodies));
}

function headerLabel<T>(c: Column<T>): HTMLElement {
  if (!c.short) return h('span', { class: 'th-label' }, c.label);
  return h('span', { class: 'th-label' }, h('span', { class: 'long' }, c.label), h('span', { class: 'short' }, c.short));
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

// ---------------------------------------------------------------------------------------------
// Distribution plot

function renderPlot(ex: ExplainView): HTMLElement {
  const summary = histogramSummary(ex.histogram);
  const holder = h('div', { class: 'plot-holder' });
  const figure = h('figure', { id: 'loss-histogram', class: 'plot', attrs: { role: 'group', 'aria-label': summary } },
    holder,
    h('figcaption', null,
      h('span', { class: 'legend' },
        h('span', { class: 'swatch helpful', attrs: { 'aria-hidden': 'true' } }), 'most helpful rows',
        h('span', { class: 'swatch harmful', attrs: { 'aria-hidden': 'true' } }), 'most harmful rows',
        h('span', { class: 'swatch zero', attrs: { 'aria-hidden': 'true' } }), 'zero: no effect'),
      h('span', { class: 'muted' }, ' Counts on a log scale. Click a mark to open its row.')));
  let lastWidth = -1;
  const draw = () => {
    const width = Math.floor(holder.clientWidth);
    if (width <= 0 || width === lastWidth) return;
    lastWidth = width;
    holder.replaceChildren(drawHistogram(ex.histogram, width, (row) => {
      const r = [...ex.byInfluence.helpful, ...ex.byInfluence.harmful, ...ex.byRelative.helpful, ...ex.byRelative.harmful].find((x) => x.row === row);
      if (r) reveal('train', r.row, r.line);
    }));
  };
  if (typeof ResizeObserver !== 'undefined') {
    resizeObserver = new ResizeObserver(draw);
    resizeObserver.observe(holder);
  }
  requestAnimationFrame(draw);
  return h('section', { id: 'plot-section', class: 'card', attrs: { 'aria-labelledby': 'plot-title' } },
    h('h2', { id: 'plot-title' }, 'Where these rows sit among all training rows'),
    h('p', { class: 'explainer muted' }, `First-order change in this test row’s loss if each of the ${plural(ex.train.rows, 'training row')} were removed. Most rows barely matter; the listed rows are the tails.`),
    h('p', { class: 'sr-only' }, summary),
    figure);
}

// ---------------------------------------------------------------------------------------------
// Audit: memorization and suspicion

function runAudit(): void {
  post({ type: 'runAudit' });
}

function exportCleaned(): void {
  const { id, reply } = exports.open();
  showExportResult(null);
  post({ type: 'exportCleaned', requestId: id });
  void reply.then((r) => {
    if (id === exports.latest) showExportResult(r);
  });
}

function showExportResult(r: { ok: boolean; message: string } | null): void {
  exportResultEl.textContent = r ? r.message : '';
  exportResultEl.className = `export-result${r ? (r.ok ? ' ok' : ' failed') : ''}`;
}

function renderAudit(audit: AuditView | null): HTMLElement {
  const title = 'Memorization and suspicious rows';
  if (!audit) {
    return section('audit-section', title,
      h('p', null, 'The audit scores every training row: whether the model disagrees with its label, whether the model is right about it only because it was trained on it (memorized), whether it hurts held-out data, and how unusual its self-influence is.'),
      h('div', { class: 'actions' },
        h('button', { id: 'run-audit', class: 'primary', attrs: { type: 'button' }, data: { focusKey: 'run-audit' }, on: { click: runAudit } }, 'Run audit')));
  }
  const held = audit.heldOut;
  const facts = h('dl', { class: 'facts' },
    fact('Held-out data', held
      ? [`${held.source === 'validation' ? 'validation' : 'test'} set `, h('span', { class: 'muted', attrs: { title: held.path } }, `(${basename(held.path)}, ${plural(held.rows, 'row')})`)]
      : [h('span', { class: 'muted' }, 'none: only the training rows were used')]),
    held ? fact('Held-out loss', [held.loss.toPrecision(3), h('span', { class: 'unit' }, ' nats')], 'mean cross-entropy on the held-out rows') : null,
    held ? fact('Held-out accuracy', [`${(held.accuracy * 100).toFixed(1)}%`]) : null,
    fact('Memorized', audit.memorizedCount === null
      ? [h('span', { class: 'muted' }, 'not checked')]
      : [`${audit.memorizedCount.toLocaleString('en-US')} of ${plural(audit.train.rows, 'training row')}`],
      'rows the model gets right only because they are in the training set: refit without them, it predicts another class'),
  );

  const cls = (c: number) => className(audit.classes, c);
  const suspicions = audit.flagged.map((f) => f.suspicion);
  const cols: Column<FlaggedRow>[] = [
    { key: 'rank', label: '#', title: 'order of the audit: memorized rows first, then the most suspicious; click to restore it', num: true, sortable: true, span: true, cell: (_r, rank) => rank },
  ];
  if (audit.image) {
    const shape = audit.image;
    cols.push({ key: 'thumb', label: 'Image', title: 'the training row drawn as an image', sortable: false, span: true,
      cell: (r) => (drawable(r.features, shape) ? thumbnail(r.features, shape, 40, `Row ${r.row} as an image`) : h('span', { class: 'muted' }, '–')) });
  }
  cols.push(
    rowColumn(audit.train.path),
    { key: 'label', label: 'Label', title: 'the label of the training row', sortable: true, cell: (r) => cls(r.label) },
    { key: 'predicted', label: 'Predicted', short: 'Pred.', title: 'what the model predicts for the training row', sortable: true, cell: (r) => predictedCell(r.label, r.predicted, cls) },
    { key: 'suspicion', label: 'Suspicion', hint: 'higher = look first', num: true, sortable: true, title: 'how strongly the audit suspects this row; higher = more suspicious',
      cell: (r) => {
        const bar = h('span', { class: 'mag warn', attrs: { 'aria-hidden': 'true' } });
        bar.style.width = `${magnitudePercent(r.suspicion, suspicions)}%`;
        return h('div', { class: 'loss-cell' }, h('span', { class: 'num-main' }, r.suspicion.toPrecision(3)), h('span', { class: 'mag-track', attrs: { 'aria-hidden': 'true' } }, bar));
      } },
    { key: 'status', label: 'Status', title: 'memorized: the model is right about the row only because it is in the training set', sortable: false,
      cell: (r) => (r.memorized
        ? h('span', { class: 'badge bad', attrs: { title: 'right only because it is in the training set: refit without it, the model predicts another class' } }, 'memorized')
        : h('span', { class: 'muted' }, 'suspicious')) },
  );
  const sorted = sortFlaggedRows(audit.flagged, ui.sort.flagged);
  const rank = new Map(audit.flagged.map((r, i) => [r, i + 1]));
  const table = dataTable({
    id: 'flagged-list',
    table: 'flagged',
    caption: [`Flagged rows (${audit.flagged.length})`, 'memorized rows first, then the most suspicious'],
    cols,
    rows: sorted,
    rank: (r) => rank.get(r) ?? 0,
    rowKey: (r) => ({ row: r.row, line: r.line }),
    rowClass: 'flagged',
    empty: 'No training row looks suspicious.',
    detail: (r) => h('ul', { class: 'reasons', attrs: { 'aria-label': `Why row ${r.row} is flagged` } },
      ...r.reasons.map((x) => h('li', { data: { code: x.code } }, describeReason(x, audit.classes)))),
  });

  const s = section('audit-section', title,
    h('p', { class: 'explainer muted' }, `Audit of ${plural(audit.train.rows, 'training row')} in `, h('span', { attrs: { title: audit.train.path } }, basename(audit.train.path)),
      ` (damping λ = ${audit.damping.toPrecision(3)}). Click a row or press Enter to open it.`),
    facts,
    table,
    h('div', { class: 'actions' },
      h('button', { id: 'export-cleaned', class: 'primary', attrs: { type: 'button', title: 'Save a cleaned copy of the training data; you choose where' }, data: { focusKey: 'export-cleaned' }, on: { click: exportCleaned } }, 'Export cleaned dataset…'),
      h('button', { id: 'run-audit', class: 'secondary', attrs: { type: 'button' }, data: { focusKey: 'run-audit' }, on: { click: runAudit } }, 'Run audit again'),
      exportResultEl));
  return s;
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mount);
else mount();
