/** The distribution plot of lossChangeIfRemoved, drawn as SVG from model.histogramGeometry. */
import type { ExplainView } from '../src/protocol/webview';
import { s } from './dom';
import { fmtSigned } from '../src/protocol/words';
import { histogramGeometry, plural } from './model';

export const HISTOGRAM_HEIGHT = 210;

/**
 * Draws the histogram `width` CSS pixels wide. Markers (the listed rows) sit in a rug under the
 * axis; clicking one calls `onMarker` with its row.
 */
export function drawHistogram(
  h: ExplainView['histogram'],
  width: number,
  onMarker: (row: number) => void,
): SVGSVGElement {
  const height = HISTOGRAM_HEIGHT;
  const g = histogramGeometry(h, width, height, { log: true });
  const { plot } = g;
  const base = plot.top + plot.height;
  const svg = s('svg', {
    class: 'histogram',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    'aria-hidden': 'true',
    focusable: 'false',
  });

  // Count axis: log scale, labelled at 1, 10, 100… up to the largest count.
  const axis = s('g', { class: 'axis' });
  svg.append(axis);
  if (g.maxCount > 0) {
    const yOf = (c: number) => base - (Math.log1p(c) / Math.log1p(g.maxCount)) * plot.height;
    const ticks = [0];
    for (let t = 1; t < g.maxCount; t *= 10) ticks.push(t);
    ticks.push(g.maxCount);
    // Keep ticks at least 12px apart; the largest count always shows.
    const shown: number[] = [];
    for (const t of ticks) {
      while (shown.length && Math.abs(yOf(shown[shown.length - 1]) - yOf(t)) < 12) {
        if (t !== g.maxCount) break;
        shown.pop();
      }
      if (!shown.length || Math.abs(yOf(shown[shown.length - 1]) - yOf(t)) >= 12) shown.push(t);
    }
    for (const t of shown) {
      const y = yOf(t);
      axis.append(
        s('line', { class: 'grid', x1: plot.left, x2: plot.left + plot.width, y1: y, y2: y }),
        s('text', { class: 'tick-label', x: plot.left - 6, y: y + 4, 'text-anchor': 'end' }, t.toLocaleString('en-US')),
      );
    }
    axis.append(
      s(
        'text',
        {
          class: 'axis-title',
          x: 0,
          y: 0,
          transform: `translate(12 ${plot.top + plot.height / 2}) rotate(-90)`,
          'text-anchor': 'middle',
        },
        'rows (log)',
      ),
    );
  }

  const bars = s('g', { class: 'bars' });
  for (const b of g.bars) {
    if (b.count === 0) continue;
    const cls = b.hi <= 0 ? 'bar neg' : b.lo >= 0 ? 'bar pos' : 'bar mid';
    const w = b.width > 3 ? b.width - 1 : b.width;
    bars.append(
      s(
        'rect',
        { class: cls, x: b.x, y: b.y, width: Math.max(0.5, w), height: b.height },
        s('title', {}, `${plural(b.count, 'row')} with a loss change from ${fmtSigned(b.lo)} to ${fmtSigned(b.hi)}`),
      ),
    );
  }
  svg.append(bars);

  // The x axis, its ticks, the zero line.
  svg.append(s('line', { class: 'baseline', x1: plot.left, x2: plot.left + plot.width, y1: base, y2: base }));
  if (g.zeroX !== null)
    svg.append(s('line', { class: 'zero', x1: g.zeroX, x2: g.zeroX, y1: plot.top - 4, y2: base + 14 }));
  for (const t of g.xTicks) {
    const anchor = t.x <= plot.left + 1 ? 'start' : t.x >= plot.left + plot.width - 1 ? 'end' : 'middle';
    svg.append(s('text', { class: 'tick-label', x: t.x, y: base + 26, 'text-anchor': anchor }, t.label));
  }

  // Rug of the listed rows: harmful first so helpful draw on top where they meet at zero.
  const rug = s('g', { class: 'rug' });
  const markers = g.markers.slice().sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'harmful' ? -1 : 1));
  for (const m of markers) {
    const mark = s(
      'g',
      { class: `marker ${m.kind}`, 'data-row': m.row },
      s('title', {}, `row ${m.row}: ${fmtSigned(m.value)} (${m.kind})${m.clamped ? ', beyond the plotted range' : ''}`),
      s('line', { x1: m.x, x2: m.x, y1: base + 3, y2: base + 13 }),
      // A wider transparent target for the mouse.
      s('rect', { class: 'hit', x: m.x - 3, y: base + 1, width: 6, height: 14 }),
    );
    mark.addEventListener('click', () => onMarker(m.row));
    rug.append(mark);
  }
  svg.append(rug);

  svg.append(
    s(
      'text',
      { class: 'axis-title', x: plot.left + plot.width / 2, y: height - 4, 'text-anchor': 'middle' },
      'Δ test loss if removed (nats, first-order)',
    ),
  );
  if (plot.width > 420) {
    svg.append(
      s('text', { class: 'side-hint harmful', x: plot.left, y: height - 4, 'text-anchor': 'start' }, '← hurts'),
      s(
        'text',
        { class: 'side-hint helpful', x: plot.left + plot.width, y: height - 4, 'text-anchor': 'end' },
        'helps →',
      ),
    );
  }
  return svg;
}
