// attn probe SUBCOMMAND: probes of what models learn. Each subcommand lives in its own module,
// loaded on demand; add one by adding an entry to PROBES.
import { type Flags, UsageError } from './args.js';

interface Probe {
  summary: string;
  help(): Promise<string>;
  run(f: Flags): Promise<void>;
}

const privacyHelp = async () => (await import('./probe-privacy.js')).PROBE_PRIVACY_HELP;

const PROBES: Record<string, Probe> = {
  icl: {
    summary: 'in-context learning: induction heads, in-context linear regression, few-shot prompting',
    help: async () => (await import('./probe-icl.js')).PROBE_ICL_HELP,
    run: async (f) => (await import('./probe-icl.js')).runProbeIcl(f),
  },
  canaries: {
    summary: 'write a training text with random secrets inserted k times each',
    help: privacyHelp,
    run: async (f) => (await import('./probe-privacy.js')).probeCanaries(f),
  },
  memorisation: {
    summary: 'canary exposure (exact and extrapolated) and verbatim extraction',
    help: privacyHelp,
    run: async (f) => (await import('./probe-privacy.js')).probeMemorisation(f),
  },
  membership: {
    summary: 'membership inference by loss and by a reference model\'s loss ratio (ROC AUC)',
    help: privacyHelp,
    run: async (f) => (await import('./probe-privacy.js')).probeMembership(f),
  },
  bias: {
    summary: 'counterfactual fairness of a classifier, occupational gender association of an LM',
    help: async () => (await import('./probe-bias.js')).PROBE_BIAS_HELP,
    run: async (f) => (await import('./probe-bias.js')).runProbeBias(f),
  },
};
const ALIASES: Record<string, string> = { memorization: 'memorisation' };

export async function probeHelp(sub?: string): Promise<string> {
  if (sub !== undefined && ALIASES[sub]) sub = ALIASES[sub];
  if (sub !== undefined && PROBES[sub]) return PROBES[sub].help();
  const width = Math.max(...Object.keys(PROBES).map((k) => k.length));
  return `attn probe <probe> [options]

Probes:
${Object.entries(PROBES).map(([k, p]) => `  ${k.padEnd(width)}  ${p.summary}`).join('\n')}

Run 'attn probe <probe> --help' for a probe's options.`;
}

export async function runProbe(f: Flags): Promise<void> {
  const given = f.parsed.positionals[0];
  const sub = given === undefined ? undefined : ALIASES[given] ?? given;
  const probe = sub === undefined ? undefined : PROBES[sub];
  if (!probe) throw new UsageError(`probe: ${sub === undefined ? 'missing probe' : `unknown probe '${sub}'`} (known: ${Object.keys(PROBES).join(', ')})`);
  return probe.run(f);
}
