/** How far to trust a result: the head's fit (with its warning), the stability under damping, and the notes. */
import type { StabilityView, TrustView } from '../../src/protocol/webview';
import { h } from '../dom';

/** "helpful 0.54 / 0.67": the overlaps at λ/10 and 10λ, per set. */
function overlapsText(s: StabilityView): string {
  return Object.entries(s.overlaps)
    .map(([name, [lo, hi]]) => `${name} ${lo.toFixed(2)} at λ/10, ${hi.toFixed(2)} at 10λ`)
    .join('; ');
}

export function renderTrust(t: TrustView, idPrefix: string): HTMLElement[] {
  const out: HTMLElement[] = t.warnings.map((w) => h('p', { class: 'callout warn', attrs: { role: 'alert' } }, w));
  if (t.head.warning && t.head.message) {
    out.push(
      h('p', { id: `${idPrefix}-head-warning`, class: 'callout warn', attrs: { role: 'note' } }, t.head.message),
    );
  }
  const rel = t.head.relGradNorm;
  const head = h(
    'span',
    {
      attrs: {
        title: `‖∇J‖ = ${t.head.gradNorm.toExponential(2)} on θ; relative to the gradient of an untrained head (θ = 0): ${rel.toPrecision(2)}. 0 at the optimum of the damped objective that influence assumes.`,
      },
    },
    t.head.mode === 'refit' ? 'head refit to the optimum' : 'head as shipped',
    ` (relative gradient ${rel < 1e-3 ? rel.toExponential(1) : rel.toPrecision(2)})`,
  );
  const parts: (HTMLElement | string)[] = [head];
  const s = t.stability;
  if (s) {
    parts.push(
      ' · ',
      h(
        'span',
        {
          id: `${idPrefix}-stability`,
          class: `badge ${s.stable ? 'good' : 'warn'}`,
          attrs: {
            title: `Jaccard overlap of the top ${s.k} at λ = ${s.dampings[1].toPrecision(3)} with the same at λ/10 and 10λ: ${overlapsText(s)}. Stable when every overlap is at least 0.5.`,
          },
        },
        s.stable ? 'stable' : 'sensitive to damping',
      ),
    );
  }
  out.push(h('p', { class: 'trust muted' }, ...parts));
  if (t.notes.length)
    out.push(
      h(
        'ul',
        { class: 'notes muted', attrs: { 'aria-label': 'Decisions taken for you' } },
        ...t.notes.map((n) => h('li', {}, n)),
      ),
    );
  return out;
}
