/**
 * `clean`: choose training rows to drop, write the data without them, and check the effect
 * (orchestration only). The rows are chosen by the audit, over the head or (`--layers`) beyond it;
 * `--verify` refits the head alone, so beyond the head it is head-only (null, with a note).
 */
import { promises as fsp } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { InfluenceError } from './errors';
import { audit, type AuditRequest, type AuditResult } from './audit';
import { checkOutPath, writeManifestWithout, writeWithout } from './data/export';
import { Engine } from './model/engine';
import { evaluate, refitHead, refitWithout } from './refit';
import { heldOutChangeIfRemoved, suspicionOrder } from './scores/ranking';
import { headTheta } from './task/head';

/** Which rows to remove: the memorized ones, the K most suspicious, or a list (0-based). */
export type RemoveSpec = { kind: 'memorized' } | { kind: 'top'; k: number } | { kind: 'rows'; rows: number[] };

export interface CleanRequest extends AuditRequest {
  remove: RemoveSpec;
  /** The new data file; never one of the inputs. */
  out: string;
  /** Refit the head exactly with and without the rows and report the actual held-out change. */
  verify?: boolean;
}

export interface CleanResult {
  removed: number[];
  kept: number;
  out: string;
  /** First-order (group influence) change of the mean held-out loss; 0 without a held-out set. */
  predicted: { heldOutLossChange: number };
  verified: {
    heldOutLossBefore: number;
    heldOutLossAfter: number;
    heldOutAccuracyBefore: number;
    heldOutAccuracyAfter: number;
    gradNorm: number;
  } | null;
  /** ['verified'] beyond the head (the refit is the head's), else []. */
  headOnly: string[];
  audit: AuditResult;
}

export async function clean(req: CleanRequest, engine?: Engine): Promise<CleanResult> {
  await checkOutPath(req.out, [req.train, req.model, ...(req.heldOut ? [req.heldOut.path] : [])]);
  const own = !engine;
  const eng = engine ?? (await Engine.open(req.model, { output: req.output }));
  try {
    // clean reports no agreement: it acts on the audit of the layers it was given.
    const a = await audit({ ...req, agreement: false }, eng);
    const { n } = a.rows;
    const removed = selectRows(req.remove, n, a.scores.suspicion, a.scores.memorized, req.train);
    const heldOut = a.heldOut?.rows ?? null;
    const predicted = {
      heldOutLossChange:
        heldOut && a.scores.heldOutInfluence
          ? heldOutChangeIfRemoved(a.scores.heldOutInfluence, removed, n, heldOut.n)
          : 0,
    };
    let verified: CleanResult['verified'] = null;
    if (req.verify && a.headOnly.length) {
      a.notes.push(
        "--verify refits the final layer alone, a check of the head's estimates: head-only, so null here (verified in headOnly)",
      );
    } else if (req.verify) {
      if (!heldOut) throw new InfluenceError('BAD_OPTION', '--verify needs a held-out set (--validation)');
      const { W, b, C, D, scale } = eng.info.head;
      const opts = { signal: req.signal, onProgress: req.onProgress };
      const full = refitHead(a.rows, a.effectiveDamping, headTheta(W, b, C, D, scale), opts);
      const without = refitWithout(a.rows, a.effectiveDamping, full.theta, removed, opts);
      const before = evaluate(heldOut, full.theta);
      const after = evaluate(heldOut, without.theta);
      verified = {
        heldOutLossBefore: before.meanLoss,
        heldOutLossAfter: after.meanLoss,
        heldOutAccuracyBefore: before.accuracy,
        heldOutAccuracyAfter: after.accuracy,
        gradNorm: Math.max(full.gradNorm, without.gradNorm),
      };
    }
    const loc = a.rows.locator;
    if (loc?.kind === 'shards')
      throw new InfluenceError(
        'BAD_OPTION',
        'clean cannot write Parquet or Arrow files yet: the rows to remove are listed by --json (run audit); remove them with your own tools',
        { file: req.train },
      );
    // A manifest is copied byte for byte (its paths stay right only in its own folder); other image sources get a new manifest.
    const copy =
      !loc ||
      (loc.manifest !== null &&
        resolve(dirname(loc.manifest)) === resolve(dirname(req.out)) &&
        extname(loc.manifest).toLowerCase() === extname(req.out).toLowerCase());
    const kept = copy
      ? await writeWithout(
          loc?.manifest ?? req.train,
          a.rows.offsets,
          removed,
          req.out,
          loc?.manifest ? await manifestStamp(loc.manifest) : a.rows.summary,
          req.signal,
        )
      : await writeManifestWithout(loc.files, loc.file, a.rows.labels, removed, req.out, req.signal);
    return {
      removed,
      kept,
      out: req.out,
      predicted,
      verified,
      headOnly: a.headOnly.length ? ['verified'] : [],
      audit: a,
    };
  } finally {
    if (own) await eng.release();
  }
}

async function manifestStamp(path: string): Promise<{ size: number; mtimeMs: number }> {
  const st = await fsp.stat(path);
  return { size: st.size, mtimeMs: st.mtimeMs };
}

/** The rows to drop, ascending. */
export function selectRows(
  spec: RemoveSpec,
  n: number,
  suspicion: Float64Array,
  memorized: Uint8Array | null,
  trainPath: string,
): number[] {
  switch (spec.kind) {
    case 'memorized': {
      if (!memorized) throw new InfluenceError('BAD_OPTION', '--remove memorized needs a held-out set (--validation)');
      const out: number[] = [];
      for (let i = 0; i < n; i++) if (memorized[i]) out.push(i);
      return out;
    }
    case 'top': {
      if (spec.k > n)
        throw new InfluenceError(
          'ROW_OUT_OF_RANGE',
          `--remove top:${spec.k} asks for more rows than the ${n} in the training file`,
          { file: trainPath },
        );
      return suspicionOrder(suspicion)
        .slice(0, spec.k)
        .sort((a, b) => a - b);
    }
    case 'rows': {
      const missing = spec.rows.filter((r) => r >= n);
      if (missing.length) {
        throw new InfluenceError(
          'ROW_OUT_OF_RANGE',
          `--remove names row${missing.length > 1 ? 's' : ''} ${missing.slice(0, 10).join(', ')}, but the training file has rows 0–${n - 1}`,
          { file: trainPath },
        );
      }
      return spec.rows;
    }
  }
}
