/** The audit: memorized and suspicious training rows with their reasons, and the cleaned export. */
import { PendingRequests } from '../../src/protocol/message';
import type { AuditView, ExportResult, FlaggedRow, HostMessage } from '../../src/protocol/webview';
import { describeReason } from '../../src/protocol/words';
import { leadingColumns } from '../columns';
import { fact, h, type Child } from '../dom';
import { basename, flaggedValue, magnitudePercent, plural } from '../model';
import { post } from '../state';
import { rowTable } from '../table';
import { renderTrust } from './trust';

/** Export requests; only the latest one's reply is shown. */
const exports = new PendingRequests<ExportResult>();
// Kept across renders (moved into each new audit section) so that a re-render does not re-announce it.
const exportResultEl = h('p', {
  id: 'export-result',
  class: 'export-result',
  attrs: { role: 'status', 'aria-live': 'polite' },
});

function section(id: string, title: string, ...children: Child[]): HTMLElement {
  const headingId = `${id}-title`;
  return h(
    'section',
    { id, class: 'card', attrs: { 'aria-labelledby': headingId } },
    h('h2', { id: headingId }, title),
    ...children,
  );
}

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

/** The host's answer to an export request. */
export function exportReplied(m: Extract<HostMessage, { type: 'reply' }>): void {
  const result = {
    ok: m.ok,
    message: m.message ?? (m.ok ? 'Cleaned dataset saved.' : 'The cleaned dataset was not saved.'),
  };
  const waiting = exports.take(m.requestId);
  if (waiting) waiting.resolve(result);
  // This page asked nothing yet: VS Code reloaded the panel while an export it asked for ran.
  else if (exports.latest === 0) showExportResult(result);
}

function showExportResult(r: ExportResult | null): void {
  exportResultEl.textContent = r ? r.message : '';
  exportResultEl.className = `export-result${r ? (r.ok ? ' ok' : ' failed') : ''}`;
}

export function renderAudit(audit: AuditView | null): HTMLElement {
  const title = 'Memorization and suspicious rows';
  if (!audit) {
    return section(
      'audit-section',
      title,
      h(
        'p',
        null,
        'The audit scores every training row: whether the model disagrees with its label, whether the model is right about it only because it was trained on it (memorized), whether it hurts held-out data, and how unusual its self-influence is.',
      ),
      h(
        'div',
        { class: 'actions' },
        h(
          'button',
          {
            id: 'run-audit',
            class: 'primary',
            attrs: { type: 'button' },
            data: { focusKey: 'run-audit' },
            on: { click: runAudit },
          },
          'Run audit',
        ),
      ),
    );
  }
  const held = audit.heldOut;
  const facts = h(
    'dl',
    { class: 'facts' },
    fact(
      'Held-out data',
      held
        ? [
            `${held.source === 'validation' ? 'validation' : 'test'} set `,
            h(
              'span',
              { class: 'muted', attrs: { title: held.path } },
              `(${basename(held.path)}, ${plural(held.rows, 'row')})`,
            ),
          ]
        : [h('span', { class: 'muted' }, 'none: only the training rows were used')],
    ),
    held
      ? fact(
          'Held-out loss',
          [held.loss.toPrecision(3), h('span', { class: 'unit' }, ' nats')],
          'mean cross-entropy on the held-out rows',
        )
      : null,
    held ? fact('Held-out accuracy', [`${(held.accuracy * 100).toFixed(1)}%`]) : null,
    fact(
      'Memorized',
      audit.memorizedCount === null
        ? [h('span', { class: 'muted' }, 'not checked')]
        : [`${audit.memorizedCount.toLocaleString('en-US')} of ${plural(audit.train.rows, 'training row')}`],
      'rows the model gets right only because they are in the training set: refit without them, it predicts another class',
    ),
  );

  const suspicions = audit.flagged.map((f) => f.suspicion);
  const cols = leadingColumns<FlaggedRow>({
    rankTitle: 'order of the audit: memorized rows first, then the most suspicious; click to restore it',
    image: audit.image,
    images: audit.images,
    thumbSize: audit.images ? 64 : 40,
    trainPath: audit.train.path,
    classes: audit.classes,
    span: true,
  });
  cols.push(
    {
      key: 'suspicion',
      label: 'Suspicion',
      hint: 'higher = look first',
      num: true,
      title: 'how strongly the audit suspects this row; higher = more suspicious',
      cell: (r) => {
        const bar = h('span', { class: 'mag warn', attrs: { 'aria-hidden': 'true' } });
        bar.style.width = `${magnitudePercent(r.suspicion, suspicions)}%`;
        return h(
          'div',
          { class: 'loss-cell' },
          h('span', { class: 'num-main' }, r.suspicion.toPrecision(3)),
          h('span', { class: 'mag-track', attrs: { 'aria-hidden': 'true' } }, bar),
        );
      },
    },
    {
      key: 'status',
      label: 'Status',
      title: 'memorized: the model is right about the row only because it is in the training set',
      cell: (r) =>
        r.memorized
          ? h(
              'span',
              {
                class: 'badge bad',
                attrs: {
                  title:
                    'right only because it is in the training set: refit without it, the model predicts another class',
                },
              },
              'memorized',
            )
          : h('span', { class: 'muted' }, 'suspicious'),
    },
  );
  const table = rowTable({
    id: 'flagged-list',
    table: 'flagged',
    caption: [`Flagged rows (${audit.flagged.length})`, 'memorized rows first, then the most suspicious'],
    cols,
    rows: audit.flagged,
    values: flaggedValue,
    rowClass: 'flagged',
    empty: 'No training row looks suspicious.',
    detail: (r) =>
      h(
        'ul',
        { class: 'reasons', attrs: { 'aria-label': `Why row ${r.row} is flagged` } },
        ...r.reasons.map((x) => h('li', { data: { code: x.code } }, describeReason(x, audit.classes))),
      ),
  });

  const s = section(
    'audit-section',
    title,
    h(
      'p',
      { class: 'explainer muted' },
      `Audit of ${plural(audit.train.rows, 'training row')} in `,
      h('span', { attrs: { title: audit.train.path } }, basename(audit.train.path)),
      ` (damping λ = ${audit.damping.toPrecision(3)}, ${audit.dampingRule}). Click a row or press Enter to open it.`,
    ),
    ...renderTrust(audit, 'audit'),
    facts,
    table,
    h(
      'div',
      { class: 'actions' },
      h(
        'button',
        {
          id: 'export-cleaned',
          class: 'primary',
          attrs: { type: 'button', title: 'Save a cleaned copy of the training data; you choose where' },
          data: { focusKey: 'export-cleaned' },
          on: { click: exportCleaned },
        },
        'Export cleaned dataset…',
      ),
      h(
        'button',
        {
          id: 'run-audit',
          class: 'secondary',
          attrs: { type: 'button' },
          data: { focusKey: 'run-audit' },
          on: { click: runAudit },
        },
        'Run audit again',
      ),
      exportResultEl,
    ),
  );
  return s;
}
