// Command-line parsing: `--name value`, `--name=value`, `--flag`, and positionals.
// Values stay strings here; each command converts and checks the ones it knows, so any config
// field can be overridden by name (`--max_iters 50`) without a flag table per field.

/** A bad command line or missing input: printed as one line, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface ParsedArgs {
  positionals: string[];
  /** Flag name (as typed, without dashes) → value; bare flags get 'true'. */
  flags: Map<string, string>;
}

export function parseArgs(argv: readonly string[], booleanFlags: ReadonlySet<string> = new Set()): ParsedArgs {
  const positionals: string[] = [];
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('--') || a === '--') {
      if (a.startsWith('-') && a.length > 1 && a !== '-h' && !/^-\d/.test(a)) throw new UsageError(`unknown option '${a}' (options are written --name value)`);
      if (a === '-h') flags.set('help', 'true');
      else positionals.push(a);
      continue;
    }
    const body = a.slice(2);
    const eq = body.indexOf('=');
    if (eq >= 0) {
      flags.set(body.slice(0, eq), body.slice(eq + 1));
      continue;
    }
    const next = argv[i + 1];
    if (booleanFlags.has(body) || next === undefined || (next.startsWith('--') && next.length > 2)) {
      flags.set(body, 'true');
    } else {
      flags.set(body, next);
      i++;
    }
  }
  return { positionals, flags };
}

/** Reads and removes known flags, so whatever is left can be reported as unknown. */
export class Flags {
  private readonly used = new Set<string>();
  constructor(readonly parsed: ParsedArgs, readonly command: string) {}

  has(name: string): boolean {
    return this.parsed.flags.has(name);
  }

  string(name: string): string | undefined {
    this.used.add(name);
    return this.parsed.flags.get(name);
  }

  required(name: string, what = 'a value'): string {
    const v = this.string(name);
    if (v === undefined || v === 'true') throw new UsageError(`${this.command}: --${name} needs ${what}`);
    return v;
  }

  number(name: string, opts: { integer?: boolean; min?: number; max?: number } = {}): number | undefined {
    const v = this.string(name);
    if (v === undefined) return undefined;
    return toNumber(`${this.command}: --${name}`, v, opts);
  }

  /** One of `choices`, or undefined when absent. */
  choice<C extends string>(name: string, choices: readonly C[]): C | undefined {
    const v = this.string(name);
    if (v === undefined) return undefined;
    if (!(choices as readonly string[]).includes(v)) throw new UsageError(`${this.command}: --${name} must be one of ${choices.join(', ')}, got '${v}'`);
    return v as C;
  }

  bool(name: string): boolean {
    const v = this.string(name);
    if (v === undefined) return false;
    if (v === 'true' || v === '1') return true;
    if (v === 'false' || v === '0') return false;
    throw new UsageError(`${this.command}: --${name} takes no value or true/false, got '${v}'`);
  }

  /** Flags not read by the command. */
  rest(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [k, v] of this.parsed.flags) if (!this.used.has(k)) out.set(k, v);
    return out;
  }

  /** Fails on any flag the command did not read. */
  done(): void {
    const left = [...this.rest().keys()];
    if (left.length > 0) throw new UsageError(`${this.command}: unknown option --${left[0]} (see 'attn ${this.command} --help')`);
  }
}

export function toNumber(what: string, v: string, opts: { integer?: boolean; min?: number; max?: number } = {}): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${what} needs a number, got '${v}'`);
  if (opts.integer && !Number.isInteger(n)) throw new UsageError(`${what} needs an integer, got '${v}'`);
  if (opts.min !== undefined && n < opts.min) throw new UsageError(`${what} must be at least ${opts.min}, got ${v}`);
  if (opts.max !== undefined && n > opts.max) throw new UsageError(`${what} must be at most ${opts.max}, got ${v}`);
  return n;
}

/** Converts a flag string to the type of an existing config value (number, boolean or string). */
export function coerceLike(what: string, current: unknown, v: string): unknown {
  if (typeof current === 'number') return toNumber(what, v);
  if (typeof current === 'boolean') {
    if (v === 'true' || v === '1') return true;
    if (v === 'false' || v === '0') return false;
    throw new UsageError(`${what} needs true or false, got '${v}'`);
  }
  if (current === null || current === undefined) {
    // Unknown type: numbers and booleans as such, anything else as a string.
    if (v === 'true' || v === 'false') return v === 'true';
    const n = Number(v);
    return v.trim() !== '' && Number.isFinite(n) ? n : v;
  }
  return v;
}
