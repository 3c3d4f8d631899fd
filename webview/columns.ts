/** The columns every row table starts with, and the link that opens a training row. */
import type { ImageShape } from '../src/protocol/webview';
import { className } from '../src/protocol/words';
import { h, imageThumb, srOnly, thumbnail, type Child } from './dom';
import { basename, drawable } from './model';
import { reveal } from './state';
import type { Column } from './table';

/** What the leading columns read from a listed training row. */
interface TrainingRow {
  row: number;
  line: number;
  label: number;
  predicted: number;
  features?: number[];
  /** The real image (rows that are image files or encoded images). */
  thumb?: string;
  file?: string;
  fileRow?: number;
}

/** A button that looks like a link and opens a row of the training file. */
export function rowLink(
  row: number,
  line: number,
  text: string,
  trainPath: string,
  tabbable = true,
): HTMLButtonElement {
  return h(
    'button',
    {
      class: 'link',
      attrs: {
        type: 'button',
        title: `Open row ${row} (line ${line}) of ${basename(trainPath)}`,
        tabindex: tabbable ? null : -1,
      },
      data: tabbable ? { focusKey: `link-${row}-${text}` } : {},
      on: {
        click: (e) => {
          e.stopPropagation();
          reveal('train', row, line);
        },
      },
    },
    text,
  );
}

/**
 * Rank, thumbnail (when the rows are images), row with its line, label and prediction. `span`:
 * the rank and thumbnail cells also span the row's detail row.
 */
export function leadingColumns<T extends TrainingRow>(o: {
  rankTitle: string;
  image: ImageShape | null;
  thumbSize: number;
  trainPath: string;
  classes: string[] | null;
  span?: boolean;
  /** The rows are images: show each row's real image. */
  images?: boolean;
}): Column<T>[] {
  const cls = (c: number) => className(o.classes, c);
  const span = o.span ? { span: true } : {};
  const cols: Column<T>[] = [
    { key: 'rank', label: '#', title: o.rankTitle, num: true, ...span, cell: (_r, rank) => rank },
  ];
  if (o.images) {
    cols.push({
      key: 'thumb',
      label: 'Image',
      title: 'the training image',
      ...span,
      cell: (r) =>
        r.thumb
          ? imageThumb(r.thumb, o.thumbSize, `Row ${r.row}${r.file ? `: ${basename(r.file)}` : ''}`)
          : h('span', { class: 'muted' }, '–'),
    });
  } else if (o.image) {
    const shape = o.image;
    cols.push({
      key: 'thumb',
      label: 'Image',
      title: 'the training row drawn as an image',
      ...span,
      cell: (r) =>
        drawable(r.features, shape)
          ? thumbnail(r.features, shape, o.thumbSize, `Row ${r.row} as an image`)
          : h('span', { class: 'muted' }, '–'),
    });
  }
  cols.push(
    // The row number with its "line N" link under it (lines grow with rows: one sort serves both).
    {
      key: 'row',
      label: 'Row',
      hint: 'and line',
      num: true,
      title: '0-based record number in the training file (after the header), and the 1-based line on which it starts',
      cell: (r) => [h('span', { class: 'row-id' }, r.row), rowLink(r.row, r.line, placeText(r), o.trainPath, false)],
    },
    { key: 'label', label: 'Label', title: 'the label of the training row', cell: (r) => cls(r.label) },
    {
      key: 'predicted',
      label: 'Predicted',
      short: 'Pred.',
      title: 'what the model predicts for the training row',
      cell: (r) => predictedCell(r.label, r.predicted, cls),
    },
  );
  return cols;
}

/** A row's place: its line, or its image file's name (and line of a manifest), or its row of a Parquet/Arrow file. */
export function placeText(r: { line: number; file?: string; fileRow?: number }): string {
  if (!r.file) return `line ${r.line}`;
  if (r.fileRow !== undefined) return `${basename(r.file)} row ${r.fileRow}`;
  return r.line > 0 ? `${basename(r.file)} · line ${r.line}` : basename(r.file);
}

function predictedCell(label: number, predicted: number, cls: (c: number) => string): Child[] {
  if (label === predicted) return [cls(predicted)];
  return [
    h(
      'span',
      {
        class: 'mismatch',
        attrs: { title: `the model predicts ${cls(predicted)}, not the row’s label ${cls(label)}` },
      },
      cls(predicted),
      h('span', { class: 'mismatch-mark', attrs: { 'aria-hidden': 'true' } }, '≠'),
      srOnly(', not the label'),
    ),
  ];
}
