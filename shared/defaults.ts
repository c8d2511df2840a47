// `{...DEFAULTS, ...opts}` where an option given as `undefined` (an unset CLI flag, say)
// keeps its default instead of erasing it.
export function definedOnly<T extends object>(opts: T): Partial<T> {
  return Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as Partial<T>;
}
