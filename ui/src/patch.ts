// The JSON merge patch (RFC 7396) that turns one assistant document into another:
// what the API's PATCH takes. Keys gone from the new document become `null`
// (removed, so back to their default); arrays and scalars are replaced whole.

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function isObj(v: unknown): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The patch from `from` to `to`, or `undefined` when they are equal. */
export function mergePatchDiff(from: unknown, to: unknown): Json | undefined {
  if (isObj(from) && isObj(to)) {
    const out: Record<string, Json> = {};
    for (const k of Object.keys(from)) {
      if (!(k in to) || to[k] === null || to[k] === undefined) {
        if (from[k] !== null) out[k] = null;
      }
    }
    for (const [k, v] of Object.entries(to)) {
      if (v === null || v === undefined) continue;
      const d = mergePatchDiff(from[k], v);
      if (d !== undefined) out[k] = d;
    }
    return Object.keys(out).length ? out : undefined;
  }
  if (JSON.stringify(from) === JSON.stringify(to)) return undefined;
  return to as Json;
}
