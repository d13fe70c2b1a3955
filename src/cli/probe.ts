// attn probe SUBCOMMAND: probes of what models learn. Each subcommand lives in its own module,
// loaded on demand; add one by adding an entry to PROBES.
import { type Flags, UsageError } from './args.js';

interface Probe {
  summary: string;
  help(): Promise<string>;
  run(f: Flags): Promise<void>;
}

const PROBES: Record<string, Probe> = {
  icl: {
    summary: 'in-context learning: induction heads, in-context linear regression, few-shot prompting',
    help: async () => (await import('./probe-icl.js')).PROBE_ICL_HELP,
    run: async (f) => (await import('./probe-icl.js')).runProbeIcl(f),
  },
};

export async function probeHelp(sub?: string): Promise<string> {
  if (sub !== undefined && PROBES[sub]) return PROBES[sub].help();
  const width = Math.max(...Object.keys(PROBES).map((k) => k.length));
  return `attn probe <probe> [options]

Probes:
${Object.entries(PROBES).map(([k, p]) => `  ${k.padEnd(width)}  ${p.summary}`).join('\n')}

Run 'attn probe <probe> --help' for a probe's options.`;
}

export async function runProbe(f: Flags): Promise<void> {
  const sub = f.parsed.positionals[0];
  const probe = sub === undefined ? undefined : PROBES[sub];
  if (!probe) throw new UsageError(`probe: ${sub === undefined ? 'missing probe' : `unknown probe '${sub}'`} (known: ${Object.keys(PROBES).join(', ')})`);
  return probe.run(f);
}
