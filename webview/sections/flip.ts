/** The flip set: the fewest training rows whose removal would change the prediction. */
import type { ExplainView } from '../../src/protocol/webview';
import { className } from '../../src/protocol/words';
import { placeText, rowLink } from '../columns';
import { h, imageThumb, type Child } from '../dom';
import { flipSentence, FLIP_SHOWN } from '../model';
import { render } from '../state';

/** Long flip sets show their first FLIP_SHOWN rows until "show all"; a new test row collapses them again. */
let flipExpanded = false;

export function collapseFlip(): void {
  flipExpanded = false;
}

export function renderFlip(ex: ExplainView): HTMLElement {
  const sentence = flipSentence(ex.flip, ex.test.predicted, ex.classes);
  const body: Child[] = [h('p', { class: 'flip-sentence' }, sentence)];
  if (ex.flip && ex.flip.rows.length > 0) {
    const all = ex.flip.rows;
    const shown = flipExpanded ? all : all.slice(0, FLIP_SHOWN);
    const more = all.length - shown.length;
    body.push(
      h(
        'ul',
        { id: 'flip-rows', class: 'chips' },
        ...shown.map((r) =>
          h(
            'li',
            { data: { row: r.row, line: r.line } },
            r.thumb ? imageThumb(r.thumb, 48, `Row ${r.row}`, 'chip-thumb') : null,
            rowLink(r.row, r.line, `row ${r.row} · ${placeText(r)}`, ex.train.path),
          ),
        ),
        more > 0
          ? h(
              'li',
              null,
              h(
                'button',
                {
                  class: 'link show-all',
                  attrs: { type: 'button' },
                  data: { focusKey: 'flip-show-all' },
                  on: {
                    click: () => {
                      flipExpanded = true;
                      render();
                    },
                  },
                },
                `show all ${all.length.toLocaleString('en-US')} rows (${more.toLocaleString('en-US')} more)`,
              ),
            )
          : null,
      ),
      h(
        'p',
        { class: 'muted small' },
        `First-order estimate: removing ${ex.flip.rows.length === 1 ? 'it' : 'them together'} and refitting would push the margin of ${className(ex.classes, ex.test.predicted)} over ${className(ex.classes, ex.flip.newClass)} below zero. The set is the smallest for any class, among at most 5% of the training rows.`,
      ),
    );
  }
  return h(
    'section',
    { id: 'flip-section', class: `card flip${ex.flip ? ' has-flip' : ''}`, attrs: { 'aria-labelledby': 'flip-title' } },
    h('h2', { id: 'flip-title' }, 'What would flip this prediction'),
    ...body,
  );
}
