/** How data errors quote what they found in a file. */

/** Quotes a user value for a message, truncating long text. */
export function show(text: string, max = 40): string {
  const t = text.length > max ? text.slice(0, max) + '…' : text;
  return JSON.stringify(t);
}

/** A list of names for a message, at most `max` of them. */
export function listNames(names: readonly string[], max = 20): string {
  if (names.length === 0) return '(none)';
  const shown = names
    .slice(0, max)
    .map((n) => show(n, 60))
    .join(', ');
  return names.length > max ? `${shown}, … (${names.length - max} more)` : shown;
}
