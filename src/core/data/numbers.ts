/**
 * Strict number parsing for data files: the bytes of a CSV field or the text of a JSONL value.
 * Only plain decimal numbers are accepted (no 'nan', 'inf', hex or empty), so that a stray value is
 * an error with its place rather than a silent NaN.
 */

const SPACE = 32;
const TAB = 9;

const POW10 = [
  1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
  1e21, 1e22,
];
/**
 * Strict number parse of bytes [s, e): optional spaces/tabs around, optional sign,
 * digits with an optional '.', optional exponent. Returns NaN when the text is not such
 * a number (so 'nan', 'inf', '0x10' and '' all give NaN; callers classify on error).
 * Fast path (<= 15 significant digits, |exp| <= 22) is exact, i.e. equal to Number().
 */
export function parseNumBytes(b: Buffer, s: number, e: number): number {
  let c: number;
  while (s < e && ((c = b[s]) === SPACE || c === TAB)) s++;
  while (e > s && ((c = b[e - 1]) === SPACE || c === TAB)) e--;
  if (s === e) return NaN;
  let i = s;
  let neg = false;
  c = b[i];
  if (c === 45) {
    neg = true;
    i++;
  } else if (c === 43) {
    i++;
  }
  let mant = 0;
  let sig = 0;
  let digits = 0;
  let exp10 = 0;
  let d: number;
  while (i < e && (d = b[i] - 48) >= 0 && d <= 9) {
    digits++;
    if (sig > 0 || d !== 0) sig++;
    mant = mant * 10 + d;
    i++;
  }
  if (i < e && b[i] === 46) {
    i++;
    while (i < e && (d = b[i] - 48) >= 0 && d <= 9) {
      digits++;
      if (sig > 0 || d !== 0) sig++;
      mant = mant * 10 + d;
      exp10--;
      i++;
    }
  }
  if (digits === 0) return NaN;
  if (i < e && ((c = b[i]) === 101 || c === 69)) {
    i++;
    let eneg = false;
    if (i < e && ((c = b[i]) === 45 || c === 43)) {
      eneg = c === 45;
      i++;
    }
    let ev = 0;
    let ed = 0;
    while (i < e && (d = b[i] - 48) >= 0 && d <= 9) {
      if (ev < 100000) ev = ev * 10 + d;
      ed++;
      i++;
    }
    if (ed === 0) return NaN;
    exp10 += eneg ? -ev : ev;
  }
  if (i !== e) return NaN;
  if (sig <= 15 && exp10 >= -22 && exp10 <= 22) {
    const v = exp10 < 0 ? mant / POW10[-exp10] : mant * POW10[exp10];
    return neg ? -v : v;
  }
  // Grammar already checked, so Number() cannot accept anything we would reject.
  return Number(b.toString('latin1', s, e));
}

function isDigitCode(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** Same grammar as parseNumBytes, for strings (JSONL values, unescaped quoted fields). */
export function parseNumber(text: string): number {
  let a = 0;
  let e = text.length;
  let c: number;
  while (a < e && ((c = text.charCodeAt(a)) === SPACE || c === TAB)) a++;
  while (e > a && ((c = text.charCodeAt(e - 1)) === SPACE || c === TAB)) e--;
  if (a === e) return NaN;
  let i = a;
  c = text.charCodeAt(i);
  if (c === 43 || c === 45) i++;
  let digits = 0;
  while (i < e && isDigitCode(text.charCodeAt(i))) {
    i++;
    digits++;
  }
  if (i < e && text.charCodeAt(i) === 46) {
    i++;
    while (i < e && isDigitCode(text.charCodeAt(i))) {
      i++;
      digits++;
    }
  }
  if (digits === 0) return NaN;
  if (i < e && ((c = text.charCodeAt(i)) === 101 || c === 69)) {
    i++;
    if (i < e && ((c = text.charCodeAt(i)) === 43 || c === 45)) i++;
    let ed = 0;
    while (i < e && isDigitCode(text.charCodeAt(i))) {
      i++;
      ed++;
    }
    if (ed === 0) return NaN;
  }
  if (i !== e) return NaN;
  return Number(text.slice(a, e));
}

/** Plain non-negative integer label (" 3 ", "3.0", up to 9 digits) from bytes, else -1. */
export function parseIntBytes(b: Buffer, s: number, e: number): number {
  let c: number;
  while (s < e && ((c = b[s]) === SPACE || c === TAB)) s++;
  while (e > s && ((c = b[e - 1]) === SPACE || c === TAB)) e--;
  if (s === e || e - s > 30) return -1;
  let v = 0;
  let i = s;
  let d: number;
  while (i < e && (d = b[i] - 48) >= 0 && d <= 9) {
    v = v * 10 + d;
    i++;
  }
  const nd = i - s;
  if (nd === 0 || nd > 9) return -1;
  if (i < e && b[i] === 46) {
    i++;
    while (i < e && b[i] === 48) i++;
  }
  return i === e ? v : -1;
}
