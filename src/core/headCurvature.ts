/**
 * `--curvature` with the head alone: EK-FAC is for layers beyond the head (the head's own policy
 * picks exact or EK-FAC-preconditioned solves by size); exact forces the explicit Hessian and the
 * exact self-influence, up to the exact GGN's limit.
 */
import { InfluenceError } from './errors';
import { ExactGgn, type DeepCurvatureMethod } from './curvature/ggn';
import type { SelfInfluenceMethod, SolverKind } from './curvature/policy';
import type { Engine } from './model/engine';

export function headCurvature<
  T extends { curvature?: DeepCurvatureMethod; solver?: SolverKind; selfInfluence?: SelfInfluenceMethod },
>(req: T, eng: Engine): T {
  if (req.curvature === 'ekfac')
    throw new InfluenceError(
      'BAD_OPTION',
      `--curvature ekfac is for --layers beyond the head; the head's own policy picks exact or EK-FAC-preconditioned solves by size (--solver, --self-influence)`,
    );
  if (req.curvature !== 'exact') return req;
  ExactGgn.check(eng.info.parameters, `the head '${eng.info.head.node}'`);
  return { ...req, solver: 'cholesky', selfInfluence: 'exact' };
}
