/**
 * How to read a data file for a model, for files as pandas and sklearn write them: the user's
 * options completed by a few rules, each decision said in words (a note).
 *
 * - Label column: `label`, else the one column named target, class, y or labels (any case).
 * - Index column: a first column headed "" or "Unnamed: 0" (pandas), or a first column id/index
 *   holding distinct integers, is skipped when the other columns then match the model's input.
 * - JSONL: the one key holding an array of F numbers, or the key named like the model's input.
 * - Class names: labels that are names, with no class list known, take the sorted order.
 *
 * A test or held-out file is read like the training file (`like`): the same label column, class
 * names, ignored columns and JSONL key where it has them; the rules run on it only where it does
 * not have them (its own label column) or its columns still do not match the model.
 */
import * as nodePath from 'node:path';
import { InfluenceError } from '../errors';
import { scanLabelNames, sortedClassNames, type LabelNames } from './labels';
import { probeTable, widthOf, type TableOptions } from './table';
import { listNames, show } from './words';

/**
 * Where the class names come from: --classes, the model's metadata, the sorted label names, an
 * image folder's class folders, or a Hugging Face ClassLabel column's names (null: the labels are ids).
 */
export type ClassesFrom = 'option' | 'metadata' | 'labels' | 'folders' | 'classLabel' | null;

/** What the rules need to know of the model. */
export interface ModelShape {
  /** Features the model takes (its input flattened). */
  F: number;
  /** Classes of the task (2 for a one-logit binary head). */
  classes: number;
  /** The model's input name: a JSONL key named like it holds the features. */
  inputName: string;
  /** Class names from the model's metadata, or null. */
  classNames: string[] | null;
}

/** How a file is read, and why. */
export interface TableChoice {
  /** The options that read the file as decided (label column, features or skipped columns, classes). */
  options: TableOptions;
  /** The label column read, or null when the file has none (an unlabelled test file). */
  labelColumn: string | null;
  /** True when the label column was guessed (there is no `label` column). */
  labelGuessed: boolean;
  /** Where the class names come from: --classes, the model's metadata, or the sorted labels. */
  classesFrom: ClassesFrom;
  /** The decisions the rules made, in words. */
  notes: string[];
}

export interface ChooseOptions {
  /** The training file's choice, which a test or held-out file follows. */
  like?: TableChoice;
  /** The file must have a label column (default true). */
  requireLabel?: boolean;
  signal?: AbortSignal;
}

/** What the user says about the data files; the rules complete it. */
export type TableRequest = Pick<TableOptions, 'labelColumn' | 'features' | 'classes' | 'ignoreColumns'>;

/** How a data file was read, as options that read it the same way again (e.g. records by their offsets). */
export type TableRead = Pick<
  TableOptions,
  'labelColumn' | 'requireLabel' | 'features' | 'ignoreColumns' | 'indexColumn' | 'classes'
>;

export function tableRead(choice: TableChoice): TableRead {
  const { labelColumn, requireLabel, features, ignoreColumns, indexColumn, classes } = choice.options;
  return { labelColumn, requireLabel, features, ignoreColumns, indexColumn, classes };
}

/** Notes without repeats, in order (a test file may come to the same decision as the training file). */
export function mergeNotes(...lists: string[][]): string[] {
  return [...new Set(lists.flat())];
}

/** Names a label column may have besides `label` (compared in lower case). */
export const LABEL_NAMES = ['target', 'class', 'y', 'labels'];

/**
 * The label column of a file without an explicit one: `label` if present, else the one column
 * named label in another case, else the one named target, class, y or labels (any case). Null
 * when there is none or more than one; `candidates` says which.
 */
export function guessLabelColumn(
  columns: readonly string[],
  exclude: ReadonlySet<string> = new Set(),
): { name: string | null; guessed: boolean; candidates: string[] } {
  const usable = columns.filter((c) => !exclude.has(c));
  if (usable.includes('label')) return { name: 'label', guessed: false, candidates: ['label'] };
  const cased = usable.filter((c) => c.toLowerCase() === 'label');
  const candidates = cased.length ? cased : usable.filter((c) => LABEL_NAMES.includes(c.toLowerCase()));
  return { name: candidates.length === 1 ? candidates[0] : null, guessed: candidates.length === 1, candidates };
}

/** LABEL_COLUMN_MISSING for a file with no label column, or with several that could be it. */
export function labelColumnMissing(
  path: string,
  columns: readonly string[],
  candidates: readonly string[],
): InfluenceError {
  const why =
    candidates.length > 1
      ? `there is no "label" column, and ${candidates.length} columns could be it: ${listNames(candidates)}`
      : `there is no "label" column, and none named ${LABEL_NAMES.join(', ')}`;
  return new InfluenceError(
    'LABEL_COLUMN_MISSING',
    `${why}; columns found: ${listNames(columns, 50)}; name the label column with --label-column`,
    { file: path },
  );
}

/** A first column that may be a row index: pandas' (header "" or "Unnamed: 0"), or one named id or index. */
export function indexColumnOf(columns: readonly string[]): { name: string; kind: 'pandas' | 'id' } | null {
  if (columns.length === 0) return null;
  const name = columns[0];
  if (name === '' || name === 'Unnamed: 0') return { name, kind: 'pandas' };
  const low = name.toLowerCase();
  if (low === 'id' || low === 'index') return { name, kind: 'id' };
  return null;
}

const squash = (s: string) => s.toLowerCase().replace(/[^\p{L}\p{N}]/gu, '');

/**
 * The JSONL key that holds the features when the keys together do not match the model: the one
 * key holding an array of F numbers, else the key named like the model's input (case and
 * punctuation aside) if it holds F numbers. Null when neither; FEATURE_COUNT_MISMATCH when several
 * keys hold F numbers and none is named like the input.
 */
export function jsonlFeatureKey(
  path: string,
  first: Record<string, unknown>,
  keys: readonly string[],
  model: Pick<ModelShape, 'F' | 'inputName'>,
): { key: string; why: 'array' | 'name' } | null {
  const arrays = keys.filter((k) => Array.isArray(first[k]) && widthOf(first[k]) === model.F);
  if (arrays.length === 1) return { key: arrays[0], why: 'array' };
  const named = keys.filter((k) => squash(k) === squash(model.inputName) && widthOf(first[k]) === model.F);
  if (named.length === 1) return { key: named[0], why: 'name' };
  if (arrays.length > 1) {
    throw new InfluenceError(
      'FEATURE_COUNT_MISMATCH',
      `the model input '${model.inputName}' takes ${model.F} features, and the keys ${listNames(arrays)} each hold ${model.F} numbers; choose one with --features`,
      { file: path, line: 1 },
    );
  }
  return null;
}

/** The flattened width of the columns but the skipped ones (JSONL arrays flatten). */
function columnsWidth(
  columns: readonly string[],
  first: Record<string, unknown> | null,
  skipped: readonly string[],
): number {
  return columns.reduce((a, c) => a + (skipped.includes(c) ? 0 : first ? widthOf(first[c]) : 1), 0);
}

/** Class names as given: --classes, the model's metadata, or the training file's (`like`). */
export function givenClasses(
  user: Pick<TableOptions, 'classes'>,
  model: ModelShape,
  like: TableChoice | undefined,
): { classes: string[] | null; from: ClassesFrom } {
  if (user.classes) return { classes: user.classes, from: 'option' };
  if (model.classNames) return { classes: model.classNames, from: 'metadata' };
  if (like) return { classes: like.options.classes ?? null, from: like.classesFrom };
  return { classes: null, from: null };
}

/**
 * Class ids for labels that are names (a scan of the label column, null when the labels are ids):
 * the names in sorted order, as sklearn's LabelEncoder gives them, and a note that says so. The
 * scan's places are lines of a text file, or 0-based rows of a Parquet/Arrow file (`unit`).
 * LABEL_INVALID when names and ids mix; CLASS_COUNT_MISMATCH when there are not C names.
 */
export function classesOfNames(
  path: string,
  scanned: LabelNames | null,
  C: number,
  note: (text: string) => void,
  unit: 'line' | 'row' = 'line',
): string[] | null {
  if (!scanned) return null;
  if (scanned.integer) {
    throw new InfluenceError(
      'LABEL_INVALID',
      `the labels mix class names (${show(scanned.first.text)}, ${unit} ${scanned.first.line}) and integer class ids (${show(scanned.integer.text)}, ${unit} ${scanned.integer.line}), so they cannot be mapped in sorted order; pass --classes with the class names in the model's order`,
      unit === 'line' ? { file: path, line: scanned.integer.line } : { file: path },
    );
  }
  const sorted = sortedClassNames(scanned.names);
  if (scanned.more || sorted.length !== C) {
    throw new InfluenceError(
      'CLASS_COUNT_MISMATCH',
      `the labels are class names, ${scanned.more ? `more than ${C}` : sorted.length} distinct ones (${listNames(sorted, 12)}), but the model has ${C} classes; pass --classes with the model's ${C} class names in order`,
      { file: path },
    );
  }
  const shown =
    sorted.length <= 6
      ? sorted.map((c, i) => `${i} = ${show(c)}`).join(', ')
      : `${sorted
          .slice(0, 3)
          .map((c, i) => `${i} = ${show(c)}`)
          .join(', ')}, …, ${C - 1} = ${show(sorted[C - 1])}`;
  note(
    `the labels are class names: mapped to class ids in sorted order, as sklearn's LabelEncoder does (${shown}); pass --classes if the model was trained with another order`,
  );
  return sorted;
}

/** Decides how to read a data file for a model; reads its header, and for names as labels its label column. */
export async function chooseTable(
  path: string,
  user: TableOptions,
  model: ModelShape,
  opts: ChooseOptions = {},
): Promise<TableChoice> {
  const { like } = opts;
  const requireLabel = opts.requireLabel ?? true;
  const { format, columns, first } = await probeTable(path, user);
  const notes: string[] = [];
  const file = nodePath.basename(path);
  const note = (text: string) => notes.push(`${file}: ${text}`);

  // Columns skipped: the user's (each must exist, the reader checks) or, for a file read like
  // another, those of its skipped columns that this file has.
  let ignore = like
    ? (like.options.ignoreColumns ?? []).filter((c) => columns.includes(c))
    : [...(user.ignoreColumns ?? [])];
  let indexColumn =
    like?.options.indexColumn !== undefined && columns.includes(like.options.indexColumn)
      ? like.options.indexColumn
      : undefined;

  // The label column.
  let labelColumn: string;
  let labelGuessed = false;
  if (user.labelColumn !== undefined) {
    labelColumn = user.labelColumn;
  } else if (like?.labelColumn && columns.includes(like.labelColumn)) {
    labelColumn = like.labelColumn;
  } else if (
    like &&
    !requireLabel &&
    columnsWidth(columns, first, [...ignore, ...(indexColumn !== undefined ? [indexColumn] : [])]) === model.F
  ) {
    // A test file without the training file's label column whose columns match the model: unlabelled.
    labelColumn = like.labelColumn ?? 'label';
  } else {
    // The training file, or a file without the training file's label column and with a column
    // too many: the same rule on its own columns.
    const g = guessLabelColumn(columns, new Set([...ignore, ...(user.features ?? [])]));
    if (g.name === null && requireLabel) throw labelColumnMissing(path, columns, g.candidates);
    labelColumn = g.name ?? 'label';
    labelGuessed = g.guessed || (like !== undefined && g.name !== null);
    if (labelGuessed)
      note(
        `the label column is ${show(labelColumn)} (there is no ${show(like?.labelColumn ?? 'label')} column); name another with --label-column`,
      );
  }
  const hasLabel = columns.includes(labelColumn);

  // The features: the user's, the training file's JSONL key, or every other column, unless a rule
  // finds the columns that match the model.
  let features = user.features;
  if (!features && like?.options.features && like.options.features.every((f) => columns.includes(f)))
    features = like.options.features;
  if (!features) {
    const skip = new Set([...ignore, ...(indexColumn !== undefined ? [indexColumn] : [])]);
    const rest = columns.filter((c) => c !== labelColumn && !skip.has(c));
    const widthOfColumn = (c: string) => (first ? widthOf(first[c]) : 1);
    const width = rest.reduce((a, c) => a + widthOfColumn(c), 0);
    if (width !== model.F && first) {
      const chosen = jsonlFeatureKey(path, first, rest, model);
      if (chosen) {
        features = [chosen.key];
        const others = rest.filter((c) => c !== chosen.key);
        const why =
          chosen.why === 'array'
            ? `the one key holding ${model.F} numbers`
            : `named like the model's input '${model.inputName}'`;
        note(
          `the features are the key ${show(chosen.key)} (${why})${others.length ? `; the other keys (${listNames(others)}) are ignored` : ''}; choose others with --features`,
        );
      }
    }
    const index = indexColumnOf(columns);
    if (
      !features &&
      width !== model.F &&
      index &&
      rest.includes(index.name) &&
      width - widthOfColumn(index.name) === model.F
    ) {
      if (index.kind === 'pandas') {
        ignore = [...ignore, index.name];
        note(
          `the first column ${show(index.name)} (a pandas index) is skipped: without it the columns match the model's ${model.F} inputs; choose otherwise with --features or --ignore-columns`,
        );
      } else {
        indexColumn = index.name;
        note(
          `the first column ${show(index.name)} is taken for row ids and skipped (its values must be distinct integers): without it the columns match the model's ${model.F} inputs; choose otherwise with --features or --ignore-columns`,
        );
      }
    }
  }

  // Class names: --classes, the model's metadata, the training file's, or the sorted labels.
  let { classes, from: classesFrom } = givenClasses(user, model, like);
  if (!classes && !like && hasLabel && requireLabel) {
    const scanned = await scanLabelNames(path, format, labelColumn, {
      count: model.classes,
      signal: opts.signal,
      chunkSize: user.chunkSize,
      open: user.open,
    });
    classes = classesOfNames(path, scanned, model.classes, note);
    if (classes) classesFrom = 'labels';
  }

  const options: TableOptions = {
    ...user,
    labelColumn,
    requireLabel,
    features,
    ignoreColumns: ignore.length ? ignore : undefined,
    indexColumn,
    classes,
  };
  return { options, labelColumn: hasLabel ? labelColumn : null, labelGuessed, classesFrom, notes };
}
