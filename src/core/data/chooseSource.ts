/**
 * The data rules of choose.ts for every source (source.ts), not only text tables:
 *
 * - a text table: chooseTable, as it is;
 * - a manifest (CSV/TSV/JSONL with a path column): the label column by the same rule as a table's
 *   (`label`, else the one column named target, class, y or labels; never the path column), and
 *   class names that are names mapped in sorted order after the same pre-scan;
 * - a Parquet/Arrow file or folder of shards: the same label column rule, --ignore-columns, a pandas
 *   index column ("" or "Unnamed: 0") skipped when the other columns then match the model, and
 *   class names from a Hugging Face ClassLabel or, for text labels, in sorted order;
 * - an image folder: the class folders' names, in sorted order, when nothing else names the classes;
 * - one image: nothing to decide.
 *
 * A test or held-out source follows the training source's choice (`like`) as a table does: its
 * label column and class names, and the columns it skips where it has them.
 */
import * as nodePath from 'node:path';
import { InfluenceError, throwIfAborted } from '../errors';
import {
  chooseTable,
  classesOfNames,
  givenClasses,
  guessLabelColumn,
  indexColumnOf,
  labelColumnMissing,
  type ChooseOptions,
  type ModelShape,
  type TableChoice,
} from './choose';
import { openColumns } from './columnar';
import { classFolders } from './images/folder';
import { scanLabelNames, type LabelNames } from './labels';
import { parseNumber } from './numbers';
import { columnFiles, pathColumnOf, planColumns, sourceKind, type SourceKind, type SourceOptions } from './source';
import { probeTable } from './table';
import { show } from './words';

/** How a source is read, and why: a TableChoice with the source's kind. */
export interface SourceChoice extends TableChoice {
  kind: SourceKind;
  options: SourceOptions;
}

/** The kind of source at `path`; a path that cannot be read is left to the table reader to report. */
async function kindOf(path: string, opts: SourceOptions): Promise<SourceKind> {
  try {
    return await sourceKind(path, opts);
  } catch (e) {
    if (e instanceof InfluenceError && (e.code === 'FILE_NOT_FOUND' || e.code === 'FILE_UNREADABLE')) return 'table';
    throw e;
  }
}

/** Decides how to read any data source for a model (see the top of this file). */
export async function chooseSource(
  path: string,
  user: SourceOptions,
  model: ModelShape,
  opts: ChooseOptions = {},
): Promise<SourceChoice> {
  const kind = await kindOf(path, user);
  if (kind === 'table') {
    const c = await chooseTable(path, user, model, opts);
    return {
      ...c,
      kind,
      options: { ...c.options, ...(user.imageColumn !== undefined ? { imageColumn: user.imageColumn } : {}) },
    };
  }
  if (kind === 'manifest') return chooseManifest(path, user, model, opts);
  if (kind === 'columns') return chooseColumns(path, user, model, opts);
  return chooseImages(path, kind, user, model, opts);
}

/** An image folder's classes are its folders (sorted), unless given; one image has no label. */
function chooseImages(
  path: string,
  kind: SourceKind,
  user: SourceOptions,
  model: ModelShape,
  opts: ChooseOptions,
): SourceChoice {
  let { classes, from } = givenClasses(user, model, opts.like);
  if (!classes && kind === 'imagefolder') {
    const names = classFolders(path);
    if (names.length) {
      classes = names;
      from = 'folders';
    }
  }
  const options: SourceOptions = {
    ...user,
    labelColumn: undefined,
    features: undefined,
    ignoreColumns: undefined,
    requireLabel: opts.requireLabel ?? true,
    classes,
  };
  return { kind, options, labelColumn: null, labelGuessed: false, classesFrom: from, notes: [] };
}

/**
 * The label column of a source that is not a text table, by the tables' rule. A test or held-out
 * source takes the training source's label column when it has it; otherwise its own by the rule,
 * when `mayGuess` (for a test file without a label, only when its columns do not match the model
 * without that column); otherwise it is unlabelled.
 */
function labelColumnOf(
  path: string,
  columns: string[],
  user: SourceOptions,
  opts: ChooseOptions,
  exclude: Set<string>,
  mayGuess: (name: string) => boolean,
  note: (t: string) => void,
): { labelColumn: string; guessed: boolean } {
  const { like } = opts;
  const requireLabel = opts.requireLabel ?? true;
  if (user.labelColumn !== undefined) return { labelColumn: user.labelColumn, guessed: false };
  if (like?.labelColumn && columns.includes(like.labelColumn)) return { labelColumn: like.labelColumn, guessed: false };
  const g = guessLabelColumn(columns, exclude);
  const take = g.name !== null && (requireLabel || !like || mayGuess(g.name)) ? g.name : null;
  if (take === null && requireLabel) throw labelColumnMissing(path, columns, g.candidates);
  const guessed = take !== null && (g.guessed || (!!like?.labelColumn && take !== like.labelColumn));
  if (guessed)
    note(
      `the label column is ${show(take!)} (there is no ${show(like?.labelColumn ?? 'label')} column); name another with --label-column`,
    );
  return { labelColumn: take ?? like?.labelColumn ?? 'label', guessed };
}

/** A CSV/TSV/JSONL manifest: the label column and class names as a table's; the path column is never the label. */
async function chooseManifest(
  path: string,
  user: SourceOptions,
  model: ModelShape,
  opts: ChooseOptions,
): Promise<SourceChoice> {
  const { like } = opts;
  const requireLabel = opts.requireLabel ?? true;
  const { format, columns } = await probeTable(path, user);
  const pathColumn = pathColumnOf(columns, user, path);
  const notes: string[] = [];
  const note = (t: string) => notes.push(`${nodePath.basename(path)}: ${t}`);
  // The images hold the features: a guessed label column can never be a feature here.
  const { labelColumn, guessed } = labelColumnOf(
    path,
    columns,
    user,
    opts,
    new Set(pathColumn !== null ? [pathColumn] : []),
    () => true,
    note,
  );
  const hasLabel = columns.includes(labelColumn);
  let { classes, from } = givenClasses(user, model, like);
  if (!classes && !like && hasLabel && requireLabel) {
    const scanned = await scanLabelNames(path, format, labelColumn, {
      count: model.classes,
      signal: opts.signal,
      chunkSize: user.chunkSize,
      open: user.open,
    });
    classes = classesOfNames(path, scanned, model.classes, note);
    if (classes) from = 'labels';
  }
  const ignore = like ? (like.options.ignoreColumns ?? []).filter((c) => columns.includes(c)) : user.ignoreColumns;
  const options: SourceOptions = {
    ...user,
    labelColumn,
    requireLabel,
    features: undefined,
    ignoreColumns: ignore?.length ? ignore : undefined,
    indexColumn: undefined,
    classes,
  };
  return {
    kind: 'manifest',
    options,
    labelColumn: hasLabel ? labelColumn : null,
    labelGuessed: guessed,
    classesFrom: from,
    notes,
  };
}

/** Parquet or Arrow (a file, or a folder of shards; also a Parquet/Arrow manifest). */
async function chooseColumns(
  path: string,
  user: SourceOptions,
  model: ModelShape,
  opts: ChooseOptions,
): Promise<SourceChoice> {
  const { like } = opts;
  const requireLabel = opts.requireLabel ?? true;
  const files = columnFiles(path);
  const notes: string[] = [];
  const note = (t: string) => notes.push(`${nodePath.basename(path)}: ${t}`);
  const cf = await openColumns(files[0]);
  let labelColumn: string;
  let guessed: boolean;
  let ignore: string[];
  let hf: string[] | null;
  let features = user.features;
  const names = cf.columns.map((c) => c.name);
  try {
    ignore = like
      ? (like.options.ignoreColumns ?? []).filter((c) => names.includes(c))
      : [...(user.ignoreColumns ?? [])];
    if (!features && like?.options.features && like.options.features.every((f) => names.includes(f)))
      features = like.options.features;
    const planWith = (label: string) =>
      planColumns(cf, { ...user, labelColumn: label, requireLabel: false, features, ignoreColumns: ignore });
    // A test file's own label column only when, as a feature, it would make the columns not match the model.
    const otherwise = like ? await planWith(like.labelColumn ?? 'label') : null;
    const matches = otherwise?.mode === 'numbers' && otherwise.featureCount === model.F;
    const exclude = new Set([
      ...ignore,
      ...(features ?? []),
      ...(user.imageColumn !== undefined ? [user.imageColumn] : []),
    ]);
    ({ labelColumn, guessed } = labelColumnOf(path, names, user, opts, exclude, () => !matches, note));
    // A pandas index written as a column ("" or "Unnamed: 0", first): skipped when without it the columns match the model.
    if (!features) {
      const plan = await planWith(labelColumn);
      const index = indexColumnOf(names);
      if (plan.mode === 'numbers' && plan.featureCount !== model.F && index?.kind === 'pandas') {
        const k = plan.columns.indexOf(index.name);
        if (k >= 0 && plan.featureCount - plan.widths[k] === model.F) {
          ignore = [...ignore, index.name];
          note(
            `the first column ${show(index.name)} (a pandas index) is skipped: without it the columns match the model's ${model.F} inputs; choose otherwise with --features or --ignore-columns`,
          );
        }
      }
    }
    hf = cf.hf?.classNames[labelColumn] ?? null;
  } finally {
    await cf.close();
  }
  const hasLabel = names.includes(labelColumn);
  let { classes, from } = givenClasses(user, model, like);
  if (!classes && !like && hf) {
    classes = hf;
    from = 'classLabel';
  } else if (!classes && !like && hasLabel && requireLabel) {
    const scanned = await scanColumnLabelNames(files, labelColumn, model.classes, opts.signal);
    classes = classesOfNames(path, scanned, model.classes, note, 'row');
    if (classes) from = 'labels';
  }
  const options: SourceOptions = {
    ...user,
    labelColumn,
    requireLabel,
    features,
    ignoreColumns: ignore.length ? ignore : undefined,
    indexColumn: undefined,
    classes,
  };
  return {
    kind: 'columns',
    options,
    labelColumn: hasLabel ? labelColumn : null,
    labelGuessed: guessed,
    classesFrom: from,
    notes,
  };
}

/**
 * The class names in a Parquet/Arrow label column, as scanLabelNames gives them for a text file
 * (places are 0-based rows over the shards), or null when the first label is an integer class id.
 * Stops at the first id, and once more than `count` names are seen.
 */
export async function scanColumnLabelNames(
  files: string[],
  column: string,
  count: number,
  signal?: AbortSignal,
): Promise<LabelNames | null> {
  const out: LabelNames = { names: [], more: false, integer: null, first: { text: '', line: 0 } };
  const seen = new Set<string>();
  let row = 0;
  for (const file of files) {
    const cf = await openColumns(file);
    try {
      for await (const rows of cf.batches([column])) {
        throwIfAborted(signal);
        for (const [v] of rows) {
          const at = row++;
          if (v === null || v === undefined) continue;
          const isId =
            typeof v === 'number' ||
            typeof v === 'bigint' ||
            typeof v === 'boolean' ||
            (typeof v === 'string' && Number.isInteger(parseNumber(v.trim())));
          if (isId) {
            if (seen.size === 0) return null;
            out.integer ??= { text: String(v).trim(), line: at };
            continue;
          }
          const text = String(v).trim();
          if (text === '' || seen.has(text)) continue;
          if (seen.size === 0) out.first = { text, line: at };
          seen.add(text);
          out.names.push(text);
          if (seen.size > count) {
            out.more = true;
            return out;
          }
        }
      }
    } finally {
      await cf.close();
    }
  }
  return seen.size === 0 ? null : out;
}
