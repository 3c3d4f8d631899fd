/** The test row being explained: its picture or features, label, prediction, loss, margin and class probabilities. */
import type { ExplainView } from '../../src/protocol/webview';
import { className } from '../../src/protocol/words';
import { placeText } from '../columns';
import { fact, h, imageThumb, thumbnail } from '../dom';
import { basename, drawable, featureEntries, plural, probabilityBars } from '../model';
import { reveal } from '../state';
import { renderLayers } from './layers';
import { renderTrust } from './trust';

export function renderTestRow(ex: ExplainView): HTMLElement {
  const t = ex.test;
  const cls = (c: number) => className(ex.classes, c);
  const wrong = t.labelled && t.label !== t.predicted;

  const picture = t.thumb
    ? h(
        'figure',
        { class: 'test-image' },
        imageThumb(t.thumb, 112, `Test row ${t.row}${t.file ? `: ${basename(t.file)}` : ''}`, 'thumb-large'),
        h('figcaption', { class: 'muted' }, t.file ? basename(t.file) : 'image'),
      )
    : ex.image && drawable(t.features, ex.image)
      ? h(
          'figure',
          { class: 'test-image' },
          thumbnail(
            t.features,
            ex.image,
            112,
            `Test row ${t.row} as a ${ex.image.height}×${ex.image.width} image`,
            'thumb-large',
          ),
          h('figcaption', { class: 'muted' }, `${ex.image.height}×${ex.image.width}`),
        )
      : renderFeatureTable(ex);

  const title = t.labelled
    ? `Test row ${t.row}: predicted ${cls(t.predicted)}, labelled ${cls(t.label)}`
    : `Test row ${t.row}: predicted ${cls(t.predicted)}`;

  const facts = h(
    'dl',
    { class: 'facts' },
    fact(
      'True label',
      t.labelled
        ? [
            cls(t.label),
            wrong ? h('span', { class: 'badge bad' }, 'misclassified') : h('span', { class: 'badge good' }, 'correct'),
          ]
        : [h('span', { class: 'muted' }, 'no label: explaining the predicted class')],
    ),
    fact('Predicted', [cls(t.predicted)]),
    fact(
      'Loss',
      [t.loss.toPrecision(3), h('span', { class: 'unit' }, ' nats')],
      `cross-entropy of the ${t.labelled ? 'true label' : 'predicted class'} for this row (nats)`,
    ),
    fact(
      'Margin',
      [t.margin.toPrecision(3), h('span', { class: 'unit' }, ` over ${cls(t.runnerUp)}`)],
      `logit of the predicted class ${cls(t.predicted)} minus the logit of the runner-up ${cls(t.runnerUp)}`,
    ),
  );

  const probs = probabilityBars(t.probabilities, t.predicted, t.labelled ? t.label : null, ex.classes);
  const probList = h(
    'ul',
    { class: 'probs', attrs: { 'aria-label': 'Predicted probability of each class' } },
    ...probs.bars.map((b) => {
      const fill = h('span', { class: 'prob-fill' });
      fill.style.width = `${b.percent}%`;
      const tags = [b.predicted ? 'predicted' : null, b.label ? 'label' : null].filter((x): x is string => x !== null);
      return h(
        'li',
        { class: `prob${b.predicted ? ' is-predicted' : ''}${b.label ? ' is-label' : ''}` },
        h('span', { class: 'prob-name' }, b.name),
        h('span', { class: 'prob-track', attrs: { 'aria-hidden': 'true' } }, fill),
        h('span', { class: 'prob-value' }, b.text),
        h('span', { class: 'prob-tags' }, ...tags.map((x) => h('span', { class: `tag tag-${x}` }, x))),
      );
    }),
    probs.hidden > 0
      ? h(
          'li',
          { class: 'prob more muted' },
          `… and ${plural(probs.hidden, 'more class')} (${(probs.hiddenMass * 100).toFixed(1)}% together)`,
        )
      : null,
  );

  const meta = h(
    'p',
    { class: 'meta' },
    h('span', { attrs: { title: ex.model.path } }, basename(ex.model.path)),
    ` (layer ${ex.model.layer}, ${ex.model.parameters.toLocaleString('en-US')} head parameters, outputs ${ex.model.output})`,
    sep(),
    h(
      'span',
      { attrs: { title: 'λ of the damped objective (1/n) Σ L_i + (λ/2)‖θ‖²' } },
      `damping λ = ${ex.damping.toPrecision(3)}`,
    ),
    ` (${ex.dampingRule})`,
    sep(),
    `self-influence: ${ex.selfInfluenceMethod === 'exact' ? 'exact' : 'EK-FAC approximation'}`,
    sep(),
    h(
      'span',
      { attrs: { title: ex.train.path } },
      `${plural(ex.train.rows, 'training row')} in ${basename(ex.train.path)}`,
    ),
    sep(),
    `${ex.seconds.toFixed(ex.seconds < 10 ? 2 : 1)} s`,
  );
  // How the images became the model's input.
  const pipeline = ex.preprocess?.length
    ? h(
        'details',
        { id: 'preprocess', class: 'preprocess' },
        h('summary', { class: 'muted' }, 'Image preprocessing'),
        h('ol', null, ...ex.preprocess.map((step) => h('li', null, step))),
      )
    : null;

  const testLink = h(
    'button',
    {
      class: 'link',
      attrs: { type: 'button', title: `Open row ${t.row} (line ${t.line}) of ${basename(t.path)}` },
      data: { focusKey: 'test-link' },
      on: { click: () => reveal('test', t.row, t.line) },
    },
    placeText(t),
  );

  return h(
    'section',
    { id: 'explain-header', class: 'card header', attrs: { 'aria-labelledby': 'explain-title' } },
    h(
      'div',
      { class: 'header-grid' },
      picture,
      h(
        'div',
        { class: 'header-main' },
        h('h2', { id: 'explain-title' }, title),
        h(
          'p',
          { class: 'where muted' },
          h('span', { attrs: { title: t.path } }, basename(t.path)),
          ` · row ${t.row} · `,
          testLink,
        ),
        facts,
      ),
      h('div', { class: 'header-probs' }, h('h3', { class: 'mini-title' }, 'Class probabilities'), probList),
    ),
    meta,
    renderLayers(ex),
    pipeline,
    ...renderTrust(ex, 'explain'),
  );
}

function sep(): HTMLSpanElement {
  return h('span', { class: 'sep' }, ' · ');
}

function renderFeatureTable(ex: ExplainView): HTMLElement {
  const { entries, more } = featureEntries(ex.test.featureNames, ex.test.features, 12);
  return h(
    'div',
    { class: 'test-features' },
    h(
      'table',
      { id: 'test-features', class: 'kv' },
      h('caption', null, `Features (${ex.test.features.length})`),
      h(
        'tbody',
        null,
        ...entries.map((e) =>
          h(
            'tr',
            null,
            h('th', { attrs: { scope: 'row', title: e.name } }, e.name),
            h('td', { class: 'num' }, e.value),
          ),
        ),
        more > 0
          ? h(
              'tr',
              { class: 'more' },
              h('td', { attrs: { colspan: 2 }, class: 'muted' }, `… and ${more.toLocaleString('en-US')} more`),
            )
          : null,
      ),
    ),
  );
}
