/**
 * Labels read from typed columns (Parquet, Arrow): integer class ids (numbers or 64-bit integers),
 * or text, which is an integer id or a class name mapped through the class names. The same rules as
 * the text tables' labels (table.ts); errors name the file and the row.
 */
import { InfluenceError } from '../errors';
import { listNames, show } from './words';

const MAX_INT32 = 2147483647;

export class LabelMap {
  private readonly byName: Map<string, number> | null;
  private readonly limit: number;

  constructor(
    private readonly file: string,
    private readonly column: string,
    private readonly classes: string[] | null,
    numClasses: number | undefined,
  ) {
    this.byName = classes ? new Map(classes.map((c, i) => [c.trim(), i])) : null;
    this.limit = Math.min(numClasses ?? classes?.length ?? MAX_INT32 + 1, MAX_INT32 + 1);
  }

  private fail(
    code: 'LABEL_INVALID' | 'LABEL_OUT_OF_RANGE' | 'LABEL_UNKNOWN_CLASS',
    row: number,
    message: string,
  ): InfluenceError {
    return new InfluenceError(code, `row ${row} (0-based), label column ${show(this.column)}: ${message}`, {
      file: this.file,
    });
  }

  /** The class id of a label value in row `row` (0-based, for messages). */
  id(v: unknown, row: number): number {
    let id: number;
    if (typeof v === 'number' || typeof v === 'bigint') {
      id = Number(v);
      if (!Number.isInteger(id))
        throw this.fail('LABEL_INVALID', row, `label ${show(String(v))} is not an integer class id`);
    } else if (typeof v === 'string') {
      const text = v.trim();
      if (text === '') throw this.fail('LABEL_INVALID', row, 'label is empty');
      if (/^[+-]?\d+$/.test(text)) id = Number(text);
      else if (this.byName) {
        const c = this.byName.get(text);
        if (c === undefined)
          throw this.fail(
            'LABEL_UNKNOWN_CLASS',
            row,
            `label ${show(text)} is not one of the ${this.classes!.length} known classes: ${listNames(this.classes!, 20)}`,
          );
        id = c;
      } else
        throw this.fail(
          'LABEL_INVALID',
          row,
          `label ${show(text)} is not an integer class id; pass --classes to map class names to ids`,
        );
    } else if (typeof v === 'boolean') {
      id = v ? 1 : 0;
    } else {
      throw this.fail(
        'LABEL_INVALID',
        row,
        v === null || v === undefined
          ? 'label is empty (null)'
          : `label must be an integer class id or a class name, found ${show(String(v))}`,
      );
    }
    if (id < 0 || id >= this.limit) {
      const range = this.limit <= MAX_INT32 ? `0..${this.limit - 1}` : `0..${MAX_INT32}`;
      throw this.fail(
        'LABEL_OUT_OF_RANGE',
        row,
        `label ${show(String(v))} is out of range: valid class ids are ${range}`,
      );
    }
    return id === 0 ? 0 : id;
  }
}
