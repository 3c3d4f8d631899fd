/**
 * What the message channels share: requests whose reply carries the request's id, and checks of
 * the messages that arrive from the other side before they are trusted. No vscode, no DOM.
 */

/** A check that a received value is a T. */
export type Guard<T> = (x: unknown) => x is T;

/** A plain object (not null, not an array), whose fields a guard may read. */
export function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/**
 * A guard for a union of messages told apart by `type`: `fields[type]` checks the rest of a
 * message of that type. Other types, including names inherited from Object.prototype, fail.
 */
export function messageGuard<M extends { type: string }>(fields: {
  [T in M['type']]: (m: Record<string, unknown>) => boolean;
}): Guard<M> {
  return (x): x is M =>
    isRecord(x) && typeof x.type === 'string' && Object.hasOwn(fields, x.type) && fields[x.type as M['type']](x);
}

/** A request that still waits for its reply, with what the sender keeps beside it. */
export interface Waiting<R, E> {
  resolve(result: R): void;
  reject(error: Error): void;
  extra: E | undefined;
}

/**
 * The requests a sender has made on a channel and not yet settled, numbered 1, 2, … in the
 * order they are made; the reply to one names its number.
 */
export class PendingRequests<R, E = never> {
  private last = 0;
  private readonly waiting = new Map<number, Waiting<R, E>>();

  /** The id of the latest request; 0 before the first. */
  get latest(): number {
    return this.last;
  }

  get size(): number {
    return this.waiting.size;
  }

  /** Numbers a new request; its reply settles `reply`. */
  open(extra?: E): { id: number; reply: Promise<R> } {
    const id = ++this.last;
    const reply = new Promise<R>((resolve, reject) => this.waiting.set(id, { resolve, reject, extra }));
    return { id, reply };
  }

  /** Request `id` while it waits (it keeps waiting), or undefined. */
  get(id: number): Waiting<R, E> | undefined {
    return this.waiting.get(id);
  }

  /** Request `id`, which stops waiting, or undefined when it was settled already or never made. */
  take(id: number): Waiting<R, E> | undefined {
    const w = this.waiting.get(id);
    this.waiting.delete(id);
    return w;
  }

  /** Every waiting request, none of which waits any more (the other side went away). */
  takeAll(): Waiting<R, E>[] {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    return all;
  }
}
