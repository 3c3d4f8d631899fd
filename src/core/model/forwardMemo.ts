/**
 * The forward batches of a pass kept in memory, so that the passes after it over the same rows
 * (EK-FAC's eigenvalues, then the scores) replay the taps and logits instead of reading the file
 * and running the user's graph again. Kept only when the whole pass is expected to fit the budget,
 * judged at its first batch, so a file too large for it never holds more than one batch extra.
 */
import { throwIfAborted } from '../errors';
import { expectedRows, type Batch } from '../data/table';
import type { DeepForward, PassExtent, PassRows, TapForward } from './deep';

/** Enough for a 200k-row table through a 256-wide layer; a million such rows exceed it and are read again. */
export const MEMO_BYTES = 512 * 1024 * 1024;

export class ForwardMemo {
  private kept: { rows: PassRows; fw: TapForward }[] | null = [];
  private bytes = 0;
  private whole = false;
  private limit = 0;

  /** `budget`: the bytes that may be kept, for a pass of that many rows. */
  constructor(private readonly budget: (rows: number) => number = () => MEMO_BYTES) {}

  /** Keeps a batch of the recording pass, or lets every kept batch go once the pass will not fit. */
  keep(batch: Batch, fw: DeepForward, extent: PassExtent): void {
    if (!this.kept) return;
    const size = fw.taps.reduce((a, t) => a + (t.data as Float32Array).byteLength, 0) + fw.z.byteLength;
    if (this.kept.length === 0) {
      const rows = 'rows' in extent ? extent.rows : expectedRows(batch, extent.bytes);
      this.limit = this.budget(rows);
      if ((size / batch.count) * rows > this.limit) {
        this.kept = null;
        return;
      }
    }
    this.bytes += size;
    if (this.bytes > this.limit) {
      this.kept = null;
      return;
    }
    const { start, count, labels } = batch;
    this.kept.push({ rows: { start, count, labels }, fw: { count: fw.count, taps: fw.taps, z: fw.z } });
  }

  /** The recording pass went over every row. */
  complete(): void {
    this.whole = this.kept !== null;
  }

  /**
   * A later pass over the rows: the kept batches when they are the whole pass, else `read` (the file
   * again). With `last`, each batch is let go once read, and later passes read the file.
   */
  async again(
    read: (fn: (rows: PassRows, fw: TapForward) => Promise<void>) => Promise<unknown>,
    fn: (rows: PassRows, fw: TapForward) => Promise<void>,
    signal?: AbortSignal,
    last = false,
  ): Promise<void> {
    const kept = this.whole ? this.kept : null;
    if (!kept) {
      await read(fn);
      return;
    }
    if (!last) {
      for (const b of kept) {
        throwIfAborted(signal);
        await fn(b.rows, b.fw);
      }
      return;
    }
    this.kept = null;
    this.whole = false;
    for (let b = kept.shift(); b; b = kept.shift()) {
      throwIfAborted(signal);
      await fn(b.rows, b.fw);
    }
  }
}
