#!/usr/bin/env node
// Sums the test counts of several suites' logs and prints one closing line `N passed, N failed`.
//   node scripts/vscode/summary.mjs [NAME=]LOG ...
// Understands node --test's spec reporter (`ℹ pass N`, `ℹ fail N`, `ℹ cancelled N`) and mocha's
// (`N passing`, `N failing`; test/e2e/e2e.mjs prints the same). The last counts in a log win.
// A log with no counts (the suite's harness crashed or timed out) counts as one failure.
// Exits 1 when anything failed.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

// eslint-disable-next-line no-control-regex -- ANSI colour codes start with ESC.
const strip = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');
function counts(text) {
  const last = (re) => {
    let m,
      v = null;
    re.lastIndex = 0;
    while ((m = re.exec(text))) v = Number(m[1]);
    return v;
  };
  const nodePass = last(/^ℹ pass (\d+)\s*$/gm);
  if (nodePass !== null) {
    return {
      passed: nodePass,
      failed: (last(/^ℹ fail (\d+)\s*$/gm) ?? 0) + (last(/^ℹ cancelled (\d+)\s*$/gm) ?? 0),
      skipped: (last(/^ℹ skipped (\d+)\s*$/gm) ?? 0) + (last(/^ℹ todo (\d+)\s*$/gm) ?? 0),
    };
  }
  const passing = last(/^\s*(\d+) passing\b/gm);
  const failing = last(/^\s*(\d+) failing\b/gm);
  if (passing === null && failing === null) return null;
  return { passed: passing ?? 0, failed: failing ?? 0, skipped: last(/^\s*(\d+) pending\b/gm) ?? 0 };
}

let passed = 0,
  failed = 0,
  bad = false;
const lines = [];
for (const arg of process.argv.slice(2)) {
  const eq = arg.indexOf('=');
  const [name, file] = eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [basename(arg).replace(/\.[^.]*$/, ''), arg];
  let text = '';
  try {
    text = strip(readFileSync(file, 'utf8'));
  } catch {
    /* missing: no counts */
  }
  const c = counts(text);
  if (!c) {
    failed += 1;
    bad = true;
    lines.push(`  ${name}: no test results (the suite did not finish; see its output above)`);
    continue;
  }
  passed += c.passed;
  failed += c.failed;
  lines.push(`  ${name}: ${c.passed} passed, ${c.failed} failed${c.skipped ? `, ${c.skipped} skipped` : ''}`);
}
console.log('');
console.log('Summary:');
for (const l of lines) console.log(l);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed || bad ? 1 : 0);
