/**
 * Which layers the influence is taken over, the selector that explains the row again over others
 * (Head / Last 2 / All, when the model has more than one layer), and the "is the head enough
 * here?" badge: the head's ranking of the rows against the deeper layers'.
 */
import type { AgreementView, ExplainView, LayerChoice } from '../../src/protocol/webview';
import { h } from '../dom';
import { plural } from '../model';
import { post } from '../state';

const CHOICES: { choice: LayerChoice; label: string; title: string }[] = [
  { choice: 'head', label: 'Head', title: 'the final linear layer alone (exact, with leverage-corrected estimates)' },
  { choice: 'last2', label: 'Last 2', title: 'the head and the layer before it' },
  { choice: 'all', label: 'All', title: 'every parameterized layer (Gemm, MatMul, Conv)' },
];

function choose(layers: LayerChoice): void {
  post({ type: 'setLayers', layers });
}

/** What the badge's numbers mean, for its tooltip. */
function agreementTitle(a: AgreementView): string {
  return (
    `Spearman's ρ = ${a.spearman.toFixed(3)}: the rank correlation between the test-loss changes if each row were removed, ` +
    `by ${a.head} and by ${a.deeper}, over all ${a.rows.toLocaleString('en-US')} training rows at λ = ${a.damping.toPrecision(3)} ` +
    `(1: the same order; 0: unrelated). Top-${a.k} overlap: how many of the ${a.k} most helpful (${a.helpful.overlap}/${a.helpful.of}) ` +
    `and most harmful (${a.harmful.overlap}/${a.harmful.of}) rows both name. Head-only is called faithful when ρ ≥ 0.9 ` +
    `and both overlaps are at least 7 of 10.`
  );
}

export function renderLayers(ex: ExplainView): HTMLElement {
  const L = ex.layers;
  const params = L.used.reduce((s, l) => s + l.parameters, 0);
  const used = h(
    'span',
    {
      id: 'layers-used',
      attrs: {
        title: L.used.map((l) => `layer ${l.index} '${l.name}' (${l.kind}, ${l.parameters} parameters)`).join('; '),
      },
    },
    `Influence over ${L.used.length === 1 ? 'the head' : `${plural(L.used.length, 'layer')}`} (${params.toLocaleString('en-US')} parameters` +
      `${L.curvature ? `; ${L.curvature === 'exact' ? 'exact Gauss–Newton' : 'EK-FAC per layer'}` : ''})`,
    L.headOnly.length ? `; head-only, so not shown: ${L.headOnly.join(', ')}` : '',
  );
  const selector =
    L.available > 1
      ? h(
          'div',
          { id: 'layer-selector', class: 'segmented', attrs: { role: 'group', 'aria-label': 'Layers' } },
          h('span', { class: 'segmented-label', attrs: { 'aria-hidden': 'true' } }, 'Layers'),
          ...CHOICES.map((c) =>
            h(
              'button',
              {
                id: `layers-${c.choice}`,
                attrs: {
                  type: 'button',
                  'aria-pressed': String(L.choice === c.choice),
                  title: `Explain this row again with influence over ${c.title}`,
                },
                data: { focusKey: `layers-${c.choice}` },
                on: { click: () => L.choice !== c.choice && choose(c.choice) },
              },
              c.label,
            ),
          ),
        )
      : null;
  const a = ex.agreement;
  const badge = a
    ? h(
        'span',
        {
          id: 'agreement',
          class: `badge ${a.faithful ? 'good' : 'warn'}`,
          attrs: { role: 'status', title: agreementTitle(a) },
        },
        a.message,
      )
    : null;
  const view =
    a && !a.faithful && L.choice === 'head'
      ? h(
          'button',
          {
            id: 'agreement-view',
            class: 'link',
            attrs: { type: 'button' },
            data: { focusKey: 'agreement-view' },
            on: { click: () => choose('last2') },
          },
          'Explain with the last 2 layers',
        )
      : null;
  return h(
    'div',
    { id: 'layers', class: 'layers' },
    h('p', { class: 'meta' }, used),
    selector,
    badge || view ? h('p', { class: 'agreement' }, badge, view ? ' ' : null, view) : null,
  );
}
