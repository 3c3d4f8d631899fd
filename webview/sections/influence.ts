/** The most helpful and most harmful training rows, ranked by influence or by relative influence. */
import type { ExplainView, Ranking, RowView } from '../../src/protocol/webview';
import { className, describeLossChange, fmtSigned } from '../../src/protocol/words';
import { leadingColumns } from '../columns';
import { h } from '../dom';
import { influenceValue, lossChangeText, magnitudePercent } from '../model';
import { panel, post, render, saveUi, ui } from '../state';
import { rowTable, type Column } from '../table';

/** The user's choice in this panel, else the workspace's (the host keeps it), else influence. */
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

export function renderInfluence(ex: ExplainView): HTMLElement {
  const ranking = currentRanking();
  const lists = ranking === 'relative' ? ex.byRelative : ex.byInfluence;
  const toggle = h(
    'div',
    { class: 'segmented', attrs: { role: 'group', 'aria-label': 'Rank rows by' } },
    h('span', { class: 'segmented-label', attrs: { 'aria-hidden': 'true' } }, 'Rank by'),
    ...(['influence', 'relative'] as const).map((r) =>
      h(
        'button',
        {
          id: `rank-${r}`,
          attrs: {
            type: 'button',
            'aria-pressed': String(ranking === r),
            title:
              r === 'influence'
                ? 'rank by the first-order change in the test loss if the row were removed'
                : 'rank by influence ÷ √self-influence (RelatIF), so rows that are influential everywhere do not dominate',
          },
          data: { focusKey: `rank-${r}` },
          on: { click: () => setRanking(r) },
        },
        r === 'influence' ? 'influence' : 'relative influence',
      ),
    ),
  );

  const explainer = h(
    'p',
    { class: 'explainer muted' },
    'Each number estimates what happens to this test row’s prediction if one training row were removed and the model refit: ',
    h('strong', null, 'first-order estimates'),
    ' from influence functions (the Newton value also accounts for the row’s own curvature). ',
    ranking === 'relative'
      ? 'Ranked by relative influence, which discounts rows that are influential for every prediction. '
      : '',
    'Click a row or press Enter on it to open it in the training file.',
  );

  return h(
    'section',
    { id: 'influence', class: 'card', attrs: { 'aria-labelledby': 'influence-title' } },
    h(
      'div',
      { class: 'section-head' },
      h(
        'h2',
        { id: 'influence-title' },
        'Training rows behind this prediction ',
        h('span', { class: 'tag tag-estimate' }, 'first-order estimates'),
      ),
      toggle,
    ),
    explainer,
    influenceTable(ex, 'helpful', lists.helpful),
    influenceTable(ex, 'harmful', lists.harmful),
  );
}

function influenceTable(ex: ExplainView, table: 'helpful' | 'harmful', rows: readonly RowView[]): HTMLElement {
  const caption: [string, string] =
    table === 'helpful'
      ? ['Most helpful', 'removing them would raise this row’s loss']
      : ['Most harmful', 'removing them would lower this row’s loss'];
  return rowTable({
    id: `${table}-table`,
    table,
    caption,
    cols: influenceColumns(ex, rows),
    rows,
    values: influenceValue,
    rowClass: table,
    empty: table === 'helpful' ? 'No training row helps this prediction.' : 'No training row hurts this prediction.',
  });
}

function influenceColumns(ex: ExplainView, rows: readonly RowView[]): Column<RowView>[] {
  const cls = (c: number) => className(ex.classes, c);
  const pred = cls(ex.test.predicted);
  const runner = cls(ex.test.runnerUp);
  const lossValues = rows.map((r) => r.lossChangeIfRemoved);
  const cols = leadingColumns<RowView>({
    rankTitle: `rank in this list (${currentRanking() === 'relative' ? 'by relative influence' : 'by influence'}); click to restore the rank order`,
    image: ex.image,
    images: ex.images,
    thumbSize: ex.images ? 64 : 32,
    trainPath: ex.train.path,
    classes: ex.classes,
  });
  cols.push(
    {
      key: 'lossChange',
      label: 'Δ test loss if removed',
      short: 'Δ loss if removed',
      hint: 'nats · +\u00a0=\u00a0helps',
      num: true,
      title:
        'first-order estimate of the change in this test row’s loss (nats) if the row were removed and the model refit; positive = the row helps, negative = it hurts. Below it, the Newton (leverage-corrected) estimate.',
      cell: (r) => lossCell(r, lossValues),
    },
    {
      key: 'relative',
      label: 'Relative influence',
      short: 'Relative',
      hint: '−\u00a0=\u00a0helps',
      num: true,
      title:
        'influence ÷ √self-influence (RelatIF): the influence on this test loss, discounted for rows that are influential everywhere; negative = upweighting the row lowers the test loss (it helps), positive = it hurts',
      cell: (r) =>
        h(
          'span',
          {
            class: signClass(-r.relativeInfluence),
            attrs: {
              title: `relative influence ${fmtSigned(r.relativeInfluence)}; self-influence ${r.selfInfluence.toPrecision(3)}`,
            },
          },
          fmtSigned(r.relativeInfluence),
        ),
    },
    {
      key: 'margin',
      label: 'Δ margin if removed',
      short: 'Δ margin',
      hint: `−\u00a0=\u00a0towards ${runner}`,
      num: true,
      title: `first-order change of the margin of ${pred} over the runner-up ${runner} (logits) if the row were removed; negative = removing it pushes the prediction towards ${runner}`,
      cell: (r) =>
        h(
          'span',
          { attrs: { title: marginWords(r.classificationInfluence, runner) } },
          fmtSigned(r.classificationInfluence),
        ),
    },
  );
  return cols;
}

function marginWords(x: number, runner: string): string {
  if (x < 0)
    return `removing this row would shrink the margin by ${fmtSigned(-x).slice(1)}, towards ${runner} (first-order)`;
  if (x > 0) return `removing this row would widen the margin by ${fmtSigned(x).slice(1)} (first-order)`;
  return 'removing this row would not change the margin (first-order)';
}

function signClass(x: number): string {
  return x > 0 ? 'pos' : x < 0 ? 'neg' : '';
}

function lossCell(r: RowView, column: readonly number[]): HTMLElement {
  const text = lossChangeText(r);
  const bar = h('span', { class: `mag ${signClass(r.lossChangeIfRemoved)}`, attrs: { 'aria-hidden': 'true' } });
  bar.style.width = `${magnitudePercent(r.lossChangeIfRemoved, column)}%`;
  return h(
    'div',
    {
      class: 'loss-cell',
      attrs: {
        title: `${describeLossChange(r.lossChangeIfRemoved)}. Newton (leverage-corrected) estimate: ${fmtSigned(r.lossChangeIfRemovedNewton)}.`,
      },
    },
    h('span', { class: `num-main ${signClass(r.lossChangeIfRemoved)}` }, text.first),
    h('span', { class: 'num-sub' }, `(${text.newton})`),
    h('span', { class: 'mag-track', attrs: { 'aria-hidden': 'true' } }, bar),
  );
}
