/** Where the listed rows sit in the distribution of the loss change over all training rows. */
import type { ExplainView } from '../../src/protocol/webview';
import { h } from '../dom';
import { drawHistogram } from '../histogram';
import { histogramSummary, plural } from '../model';
import { reveal } from '../state';

/** Redraws the plot when its width changes; one plot at a time. */
let resizeObserver: ResizeObserver | null = null;

/** Stops following the last plot's width (the page is being rebuilt). */
export function detachPlot(): void {
  resizeObserver?.disconnect();
  resizeObserver = null;
}

export function renderPlot(ex: ExplainView): HTMLElement {
  const summary = histogramSummary(ex.histogram);
  const holder = h('div', { class: 'plot-holder' });
  const figure = h(
    'figure',
    { id: 'loss-histogram', class: 'plot', attrs: { role: 'group', 'aria-label': summary } },
    holder,
    h(
      'figcaption',
      null,
      h(
        'span',
        { class: 'legend' },
        h('span', { class: 'swatch helpful', attrs: { 'aria-hidden': 'true' } }),
        'most helpful rows',
        h('span', { class: 'swatch harmful', attrs: { 'aria-hidden': 'true' } }),
        'most harmful rows',
        h('span', { class: 'swatch zero', attrs: { 'aria-hidden': 'true' } }),
        'zero: no effect',
      ),
      h('span', { class: 'muted' }, ' Counts on a log scale. Click a mark to open its row.'),
    ),
  );
  let lastWidth = -1;
  const draw = () => {
    const width = Math.floor(holder.clientWidth);
    if (width <= 0 || width === lastWidth) return;
    lastWidth = width;
    holder.replaceChildren(
      drawHistogram(ex.histogram, width, (row) => {
        const r = [
          ...ex.byInfluence.helpful,
          ...ex.byInfluence.harmful,
          ...ex.byRelative.helpful,
          ...ex.byRelative.harmful,
        ].find((x) => x.row === row);
        if (r) reveal('train', r.row, r.line);
      }),
    );
  };
  if (typeof ResizeObserver !== 'undefined') {
    resizeObserver = new ResizeObserver(draw);
    resizeObserver.observe(holder);
  }
  requestAnimationFrame(draw);
  return h(
    'section',
    { id: 'plot-section', class: 'card', attrs: { 'aria-labelledby': 'plot-title' } },
    h('h2', { id: 'plot-title' }, 'Where these rows sit among all training rows'),
    h(
      'p',
      { class: 'explainer muted' },
      `First-order change in this test row’s loss if each of the ${plural(ex.train.rows, 'training row')} were removed. Most rows barely matter; the listed rows are the tails.`,
    ),
    h('p', { class: 'sr-only' }, summary),
    figure,
  );
}
