/** What the panel shows before any prediction is explained: how to get started. */
import { h } from '../dom';

export function renderEmpty(): HTMLElement {
  const cmd = (t: string) => h('strong', { class: 'command' }, t);
  return h(
    'section',
    { id: 'empty-state', class: 'card empty', attrs: { 'aria-labelledby': 'empty-title' } },
    h('h2', { id: 'empty-title' }, 'No prediction explained yet'),
    h(
      'p',
      null,
      'Influence Lens shows which training rows made your ONNX classifier predict what it did, and which rows it only memorizes.',
    ),
    h(
      'ol',
      { class: 'steps' },
      h(
        'li',
        null,
        'In the Explorer, right-click your ',
        h('code', null, '.onnx'),
        ' model and choose ',
        cmd('Use as Model'),
        ', then right-click the CSV, TSV or JSONL data files and choose ',
        cmd('Use as Training Data'),
        ' and ',
        cmd('Use as Test Data'),
        '.',
      ),
      h(
        'li',
        null,
        'Open the test file, right-click a row and choose ',
        cmd('Explain This Row’s Prediction'),
        ' (or run ',
        cmd('Influence Lens: Explain Test Row by Number…'),
        ' from the Command Palette).',
      ),
      h(
        'li',
        null,
        'To look for mislabelled and memorized rows, right-click the training file and choose ',
        cmd('Audit Training Data'),
        '.',
      ),
    ),
    h(
      'p',
      { class: 'muted' },
      'No data at hand? Run ',
      cmd('Influence Lens: Open the Bundled Sample'),
      ' from the Command Palette.',
    ),
  );
}
