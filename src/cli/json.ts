/** Streams one JSON document to a writable without building it as one string. */
import type { Writable } from 'node:stream';

/**
 * JSON text in which every number is finite: a non-finite number (NaN, ±Infinity) becomes null.
 * JSON.stringify does the same silently; here it is on purpose, and a result with such numbers
 * carries a NON_FINITE warning saying which scores of which rows, and why.
 */
export function jsonText(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v));
}

/** Characters gathered before one write: a write per row costs more than the row's JSON. */
const FLUSH_AT = 1 << 16;

export class JsonWriter {
  private pending: string[] = [];
  private size = 0;

  constructor(private readonly out: Writable) {}

  /** Appends text, writing in pieces of about FLUSH_AT characters and waiting for the stream to drain when its buffer is full. */
  async raw(text: string): Promise<void> {
    this.pending.push(text);
    this.size += text.length;
    if (this.size >= FLUSH_AT) await this.flush();
  }

  /** `,"name":value` — for fields after the first (non-finite numbers as null, see jsonText). */
  field(name: string, value: unknown): Promise<void> {
    return this.raw(`,${JSON.stringify(name)}:${jsonText(value)}`);
  }

  async end(): Promise<void> {
    await this.flush();
    // stdout is not ended (the process still owns it); wait until everything is flushed.
    await new Promise<void>((resolve) => this.out.write('', () => resolve()));
  }

  private async flush(): Promise<void> {
    if (this.size === 0) return;
    const text = this.pending.join('');
    this.pending = [];
    this.size = 0;
    if (!this.out.write(text)) await new Promise<void>((resolve) => this.out.once('drain', resolve));
  }
}
