import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import type { FlaggedRow, RowView } from '../../src/protocol/webview';
import {
  INK,
  NO_FLIP,
  PAPER,
  ariaSort,
  basename,
  drawable,
  featureEntries,
  firstDir,
  flaggedValue,
  flipSentence,
  fmtAxis,
  formatPercent,
  formatValue,
  histogramGeometry,
  histogramSummary,
  influenceValue,
  lossChangeText,
  magnitudePercent,
  nextSort,
  parseUiState,
  probabilityBars,
  sortBy,
  sortRows,
  thumbnailPixels,
} from '../../webview/model';
import { fmtSigned } from '../../src/protocol/words';

function rv(row: number, lossChangeIfRemoved: number, extra: Partial<RowView> = {}): RowView {
  return {
    row,
    line: row + 2,
    label: row % 3,
    predicted: row % 2,
    lossChangeIfRemoved,
    lossChangeIfRemovedNewton: lossChangeIfRemoved * 1.1,
    influence: -lossChangeIfRemoved * 1000,
    selfInfluence: 1,
    relativeInfluence: -lossChangeIfRemoved * 1000,
    classificationInfluence: 0,
    ...extra,
  };
}

const rows = (xs: { row: number }[]) => xs.map((r) => r.row);

describe('sorting', () => {
  test('sortBy sorts ascending and descending without touching the input', () => {
    const xs = [3, 1, 2];
    const input = xs.slice();
    assert.deepEqual(
      sortBy(xs, (x) => x, 'asc'),
      [1, 2, 3],
    );
    assert.deepEqual(
      sortBy(xs, (x) => x, 'desc'),
      [3, 2, 1],
    );
    assert.deepEqual(xs, input);
  });

  test('sortBy is stable on ties in both directions and puts NaN last', () => {
    const xs = [
      { k: 1, id: 'a' },
      { k: NaN, id: 'n' },
      { k: 0, id: 'b' },
      { k: 1, id: 'c' },
    ];
    assert.deepEqual(
      sortBy(xs, (x) => x.k, 'asc').map((x) => x.id),
      ['b', 'a', 'c', 'n'],
    );
    assert.deepEqual(
      sortBy(xs, (x) => x.k, 'desc').map((x) => x.id),
      ['a', 'c', 'b', 'n'],
    );
  });

  test('sortBy without a value keeps or reverses the given order', () => {
    assert.deepEqual(sortBy([5, 9, 1], null, 'asc'), [5, 9, 1]);
    assert.deepEqual(sortBy([5, 9, 1], null, 'desc'), [1, 9, 5]);
  });

  test('sortRows by an influence column; null, rank or unknown keys keep the rank order', () => {
    const list = [rv(10, 0.5), rv(2, 0.9), rv(7, 0.1)];
    assert.deepEqual(rows(sortRows(list, { key: 'lossChange', dir: 'desc' }, influenceValue)), [2, 10, 7]);
    assert.deepEqual(rows(sortRows(list, { key: 'row', dir: 'asc' }, influenceValue)), [2, 7, 10]);
    assert.deepEqual(rows(sortRows(list, { key: 'line', dir: 'desc' }, influenceValue)), [10, 7, 2]);
    assert.deepEqual(rows(sortRows(list, { key: 'newton', dir: 'asc' }, influenceValue)), [7, 10, 2]);
    assert.deepEqual(rows(sortRows(list, null, influenceValue)), [10, 2, 7]);
    assert.deepEqual(rows(sortRows(list, { key: 'rank', dir: 'desc' }, influenceValue)), [7, 2, 10]);
    assert.deepEqual(rows(sortRows(list, { key: 'nonsense', dir: 'asc' }, influenceValue)), [10, 2, 7]);
    // Keys from Object.prototype are not columns.
    assert.deepEqual(rows(sortRows(list, { key: 'toString', dir: 'asc' }, influenceValue)), [10, 2, 7]);
  });

  test('sortRows by relative influence and margin', () => {
    const list = [
      rv(1, 0, { relativeInfluence: 2, classificationInfluence: -0.1 }),
      rv(2, 0, { relativeInfluence: -3, classificationInfluence: 0.4 }),
    ];
    assert.deepEqual(rows(sortRows(list, { key: 'relative', dir: 'asc' }, influenceValue)), [2, 1]);
    assert.deepEqual(rows(sortRows(list, { key: 'margin', dir: 'asc' }, influenceValue)), [1, 2]);
  });

  test('sortRows by a flagged column: suspicion and label', () => {
    const f = (row: number, suspicion: number, label: number): FlaggedRow => ({
      row,
      line: row + 2,
      label,
      predicted: 0,
      suspicion,
      memorized: false,
      reasons: [],
    });
    const list = [f(1, 0.2, 5), f(2, 0.9, 3), f(3, 0.5, 4)];
    assert.deepEqual(rows(sortRows(list, { key: 'suspicion', dir: 'desc' }, flaggedValue)), [2, 3, 1]);
    assert.deepEqual(rows(sortRows(list, { key: 'label', dir: 'asc' }, flaggedValue)), [2, 3, 1]);
    assert.deepEqual(rows(sortRows(list, null, flaggedValue)), [1, 2, 3]);
  });

  test('first click direction keeps the notable rows on top; a second click flips', () => {
    assert.equal(firstDir('helpful', 'lossChange'), 'desc');
    assert.equal(firstDir('harmful', 'lossChange'), 'asc');
    assert.equal(firstDir('helpful', 'relative'), 'asc');
    assert.equal(firstDir('harmful', 'relative'), 'desc');
    assert.equal(firstDir('flagged', 'suspicion'), 'desc');
    assert.equal(firstDir('helpful', 'row'), 'asc');
    assert.deepEqual(nextSort(null, 'harmful', 'lossChange'), { key: 'lossChange', dir: 'asc' });
    assert.deepEqual(nextSort({ key: 'lossChange', dir: 'asc' }, 'harmful', 'lossChange'), {
      key: 'lossChange',
      dir: 'desc',
    });
    assert.deepEqual(nextSort({ key: 'lossChange', dir: 'asc' }, 'harmful', 'row'), { key: 'row', dir: 'asc' });
    // The rank column is already ascending by default, so its first click reverses it.
    assert.deepEqual(nextSort(null, 'helpful', 'rank'), { key: 'rank', dir: 'desc' });
  });

  test('ariaSort marks only the sorted column; rank order is the rank column ascending', () => {
    assert.equal(ariaSort(null, 'rank'), 'ascending');
    assert.equal(ariaSort(null, 'row'), 'none');
    assert.equal(ariaSort({ key: 'row', dir: 'desc' }, 'row'), 'descending');
    assert.equal(ariaSort({ key: 'row', dir: 'desc' }, 'rank'), 'none');
  });
});

describe('UI state', () => {
  test('parseUiState falls back to defaults for anything malformed', () => {
    const empty = { ranking: null, sort: { helpful: null, harmful: null, flagged: null }, scrollY: 0 };
    for (const x of [undefined, null, 3, 'x', [], {}]) assert.deepEqual(parseUiState(x), empty);
    assert.deepEqual(
      parseUiState({ ranking: 'sideways', sort: { helpful: { key: 'row', dir: 'up' }, harmful: 5 }, scrollY: -4 }),
      empty,
    );
    assert.deepEqual(parseUiState({ scrollY: NaN }), empty);
  });

  test('parseUiState keeps valid parts', () => {
    const ui = parseUiState({
      ranking: 'relative',
      sort: { helpful: { key: 'row', dir: 'desc' }, flagged: { key: 'suspicion', dir: 'asc' }, other: 1 },
      scrollY: 640,
    });
    assert.deepEqual(ui, {
      ranking: 'relative',
      sort: { helpful: { key: 'row', dir: 'desc' }, harmful: null, flagged: { key: 'suspicion', dir: 'asc' } },
      scrollY: 640,
    });
  });
});

describe('histogram geometry', () => {
  const margins = { left: 30, right: 0, top: 0, bottom: 0 };
  const h = {
    edges: [-1, 0, 1, 2],
    counts: [1, 0, 3],
    marked: [
      { row: 4, line: 6, value: 1.5, kind: 'helpful' as const },
      { row: 5, line: 7, value: -1, kind: 'harmful' as const },
      { row: 6, line: 8, value: 5, kind: 'helpful' as const },
    ],
  };

  test('bars span their edges and are linear in the count', () => {
    const g = histogramGeometry(h, 330, 200, { margins });
    assert.deepEqual(g.plot, { left: 30, top: 0, width: 300, height: 200 });
    assert.deepEqual(
      g.bars.map((b) => [b.x, b.width]),
      [
        [30, 100],
        [130, 100],
        [230, 100],
      ],
    );
    assert.deepEqual(
      g.bars.map((b) => Math.round(b.height * 100) / 100),
      [66.67, 0, 200],
    );
    assert.deepEqual(
      g.bars.map((b) => Math.round((b.y + b.height) * 100) / 100),
      [200, 200, 200],
    );
    assert.equal(g.maxCount, 3);
    assert.equal(g.total, 4);
    assert.equal(g.zeroX, 130);
  });

  test('log scale uses log(1 + count)', () => {
    const g = histogramGeometry(h, 330, 200, { margins, log: true });
    assert.ok(Math.abs(g.bars[0].height - 100) < 1e-9, String(g.bars[0].height));
    assert.equal(g.bars[2].height, 200);
  });

  test('a non-empty bin is at least one unit high', () => {
    const g = histogramGeometry({ edges: [0, 1, 2], counts: [1, 100000], marked: [] }, 100, 100, {
      margins: { left: 0, right: 0, top: 0, bottom: 0 },
    });
    assert.equal(g.bars[0].height, 1);
  });

  test('markers sit at their values and are clamped to the edges', () => {
    const g = histogramGeometry(h, 330, 200, { margins });
    assert.deepEqual(
      g.markers.map((m) => [m.row, m.x, m.kind, m.clamped]),
      [
        [4, 280, 'helpful', false],
        [5, 30, 'harmful', false],
        [6, 330, 'helpful', true],
      ],
    );
  });

  test('zero outside the edges has no zero line', () => {
    const g = histogramGeometry({ edges: [1, 2, 3], counts: [2, 2], marked: [] }, 330, 200, { margins });
    assert.equal(g.zeroX, null);
    assert.equal(
      g.xTicks.some((t) => t.label === '0'),
      false,
    );
  });

  test('malformed histograms give no bars', () => {
    for (const bad of [
      { edges: [0, 1], counts: [1, 2], marked: [] },
      { edges: [0, 2, 1], counts: [1, 2], marked: [] },
      { edges: [0, NaN, 2], counts: [1, 2], marked: [] },
      { edges: [0], counts: [], marked: [] },
    ]) {
      assert.equal(histogramGeometry(bad, 300, 100).bars.length, 0, JSON.stringify(bad));
    }
  });

  test('equal edges put everything in the middle', () => {
    const g = histogramGeometry(
      { edges: [0.5, 0.5], counts: [10], marked: [{ row: 1, line: 3, value: 0.5, kind: 'helpful' }] },
      230,
      100,
      { margins },
    );
    assert.equal(g.markers[0].x, 130);
    assert.equal(g.bars[0].width, 200);
  });

  test('x ticks: both ends, and zero unless it crowds an end', () => {
    const g = histogramGeometry(h, 330, 200, { margins });
    assert.deepEqual(
      g.xTicks.map((t) => t.label),
      ['−1', '0', '+2'],
    );
    const near = histogramGeometry({ edges: [-0.01, 1, 2], counts: [1, 1], marked: [] }, 330, 200, { margins });
    assert.deepEqual(
      near.xTicks.map((t) => t.label),
      ['−0.01', '+2'],
    );
  });

  test('summary names the total, the range and the marked rows', () => {
    const s = histogramSummary(h);
    assert.match(s, /each of 4 training rows/);
    assert.match(s, /from −1 to \+2 nats/);
    assert.match(s, /holds 3 rows/);
    assert.match(s, /2 most helpful .* and 1 most harmful/);
    assert.match(histogramSummary({ edges: [], counts: [], marked: [] }), /No distribution/);
  });

  test('fmtAxis', () => {
    assert.equal(fmtAxis(0), '0');
    assert.equal(fmtAxis(0.07512), '+0.0751');
    assert.equal(fmtAxis(-0.0484), '−0.0484');
    assert.equal(fmtAxis(2e-5), '+2.0e-5');
  });
});

describe('thumbnails', () => {
  test('min–max normalised, high values dark, opaque', () => {
    const px = thumbnailPixels([0, 8, 16, 4], { height: 2, width: 2 });
    assert.equal(px.length, 16);
    const gray = [0, 1, 2, 3].map((i) => px[4 * i]);
    assert.deepEqual(gray, [
      PAPER,
      Math.round(PAPER - 0.5 * (PAPER - INK)),
      INK,
      Math.round(PAPER - 0.25 * (PAPER - INK)),
    ]);
    for (let i = 0; i < 4; i++) {
      assert.equal(px[4 * i + 1], px[4 * i]);
      assert.equal(px[4 * i + 2], px[4 * i]);
      assert.equal(px[4 * i + 3], 255);
    }
  });

  test('negative values, NaN and missing features', () => {
    const px = thumbnailPixels([-2, NaN, 2], { height: 1, width: 4 }, 200, 0);
    assert.deepEqual(
      [0, 1, 2, 3].map((i) => px[4 * i]),
      [200, 200, 0, 200],
    );
  });

  test('a constant image is blank paper', () => {
    const px = thumbnailPixels([5, 5, 5, 5], { height: 2, width: 2 });
    assert.deepEqual(
      [0, 1, 2, 3].map((i) => px[4 * i]),
      [PAPER, PAPER, PAPER, PAPER],
    );
  });

  test('drawable needs a shape and enough features', () => {
    assert.equal(drawable([1, 2, 3, 4], { height: 2, width: 2 }), true);
    assert.equal(drawable([1, 2, 3], { height: 2, width: 2 }), false);
    assert.equal(drawable(undefined, { height: 2, width: 2 }), false);
    assert.equal(drawable([1, 2, 3, 4], null), false);
  });
});

describe('sentences and numbers', () => {
  test('flip sentence', () => {
    assert.equal(flipSentence(null, 1, null), NO_FLIP);
    assert.equal(NO_FLIP, 'No set of at most 5% of the training rows flips this prediction (first-order).');
    assert.equal(
      flipSentence({ rows: [{ row: 57, line: 59 }], newClass: 8 }, 1, null),
      'Removing this row would change the prediction from 1 to 8.',
    );
    assert.equal(
      flipSentence(
        {
          rows: [
            { row: 1, line: 3 },
            { row: 2, line: 4 },
            { row: 9, line: 11 },
          ],
          newClass: 0,
        },
        2,
        ['cat', 'dog', 'bird'],
      ),
      'Removing these 3 rows would change the prediction from 2 (bird) to 0 (cat).',
    );
  });

  test('formatPercent never rounds to a misleading 0% or 100%', () => {
    assert.equal(formatPercent(0), '0%');
    assert.equal(formatPercent(1), '100%');
    assert.equal(formatPercent(0.0004), '<0.1%');
    assert.equal(formatPercent(0.9996), '>99.9%');
    assert.equal(formatPercent(0.12345), '12.3%');
    assert.equal(formatPercent(NaN), '–');
  });

  test('probability bars: one per class with flags', () => {
    const { bars, hidden } = probabilityBars([0.1, 0.6, 0.3], 1, 2, ['a', 'b', 'c']);
    assert.equal(hidden, 0);
    assert.deepEqual(
      bars.map((b) => [b.name, Math.round(b.percent * 10) / 10, b.text, b.predicted, b.label]),
      [
        ['0 (a)', 10, '10.0%', false, false],
        ['1 (b)', 60, '60.0%', true, false],
        ['2 (c)', 30, '30.0%', false, true],
      ],
    );
    const unlabelled = probabilityBars([0.5, 0.5], 0, null, null);
    assert.equal(
      unlabelled.bars.some((b) => b.label),
      false,
    );
  });

  test('probability bars with many classes keep the top ones, the prediction and the label', () => {
    const p = Array.from({ length: 20 }, (_, i) => (i === 7 ? 0.5 : i === 19 ? 0.001 : 0.499 / 18));
    const { bars, hidden, hiddenMass } = probabilityBars(p, 7, 19, null, 5);
    assert.equal(bars.length, 5);
    assert.equal(hidden, 15);
    assert.ok(bars.some((b) => b.cls === 7 && b.predicted));
    assert.ok(bars.some((b) => b.cls === 19 && b.label));
    assert.deepEqual(
      bars.map((b) => b.cls),
      bars.map((b) => b.cls).sort((a, b) => a - b),
    );
    assert.ok(Math.abs(hiddenMass - (15 * 0.499) / 18) < 1e-12);
  });

  test('loss change text shows the first-order and Newton values', () => {
    assert.deepEqual(lossChangeText({ lossChangeIfRemoved: 0.09774, lossChangeIfRemovedNewton: 0.1041 }), {
      first: '+0.0977',
      newton: 'Newton +0.104',
    });
    assert.deepEqual(lossChangeText({ lossChangeIfRemoved: -0.0123, lossChangeIfRemovedNewton: -4.56e-5 }), {
      first: '−0.0123',
      newton: 'Newton −4.56e-5',
    });
  });

  test('fmtSigned uses a real minus sign', () => {
    assert.equal(fmtSigned(0), '0');
    assert.equal(fmtSigned(-1.5), '−1.50');
    assert.equal(fmtSigned(2), '+2.00');
    assert.equal(fmtSigned(NaN), 'NaN');
    assert.equal(fmtSigned(-4.56e-5), '−4.56e-5', 'only the sign changes, not the exponent');
    assert.equal(fmtSigned(8.24e-4), '+8.24e-4');
    assert.equal(fmtSigned(-Infinity), '-Infinity');
  });

  test('feature values and entries', () => {
    assert.equal(formatValue(3), '3');
    assert.equal(formatValue(-16), '-16');
    assert.equal(formatValue(0.123456), '0.1235');
    assert.equal(formatValue(1e-7), '1.000e-7');
    const { entries, more } = featureEntries(['a', 'b'], [1, 2.5, 3], 2);
    assert.deepEqual(entries, [
      { name: 'a', value: '1' },
      { name: 'b', value: '2.5' },
    ]);
    assert.equal(more, 1);
    assert.deepEqual(featureEntries([], [7], 4), { entries: [{ name: 'feature 0', value: '7' }], more: 0 });
  });

  test('basename and magnitude', () => {
    assert.equal(basename('/work/data/train.csv'), 'train.csv');
    assert.equal(basename('C:\\data\\test.csv'), 'test.csv');
    assert.equal(basename('plain.csv'), 'plain.csv');
    assert.equal(magnitudePercent(-0.5, [0.25, -1, 0.5]), 50);
    assert.equal(magnitudePercent(1, [0, 0]), 0);
  });
});
