/** Streams one JSON document to a writable without building it as one string. */
import type { Writable } from 'node:stream';

export class JsonWriter {
  constructor(private readonly out: Writable) {}

  /** Writes text, waiting for the stream to drain when its buffer is full. */
  async raw(text: string): Promise<void> {
    if (!this.out.write(text)) await new Promise<void>((resolve) => this.out.once('drain', resolve));
  }

  /** `,"name":value` — for fields after the first. */
  field(name: string, value: unknown): Promise<void> {
    return this.raw(`,${JSON.stringify(name)}:${JSON.stringify(value)}`);
  }

  async end(): Promise<void> {
    // stdout is not ended (the process still owns it); wait until everything is flushed.
    await new Promise<void>((resolve) => this.out.write('', () => resolve()));
  }
}
