// Prometheus text exposition (version 0.0.4) of the server's counters and gauges.

export class Metrics {
  /** Requests answered, by endpoint and status. */
  private readonly requests = new Map<string, number>();
  generatedTokens = 0;
  promptTokens = 0;
  decodeSteps = 0;
  /** Sum of the batch sizes of the decode steps (mean batch = this / decodeSteps). */
  decodeRows = 0;
  ttftSum = 0;
  ttftCount = 0;
  /** Seconds the scheduler spent in each part of its steps (the rest of the wall time is HTTP
   *  work and idling): prompts (a pooled step's forward is split by token count between the
   *  joining prompts and the decode rows), decode forwards, and per-row sampling with the token
   *  events it fires (which write to the streams). */
  readonly stepSeconds = { prefill: 0, forward: 0, sample: 0 };
  /** Generated-token timestamps over the last window, for tokens/s. */
  private readonly recent: number[] = [];
  private readonly windowMs = 10_000;

  constructor(private readonly gauges: () => { queue: number; batch: number; running: number }) {}

  request(endpoint: string, status: number): void {
    const k = `${endpoint}\u0000${status}`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
  }

  tokens(n: number, now = Date.now()): void {
    this.generatedTokens += n;
    for (let i = 0; i < n; i++) this.recent.push(now);
    this.trim(now);
  }

  /** Generated tokens per second over the last 10 s. */
  tokensPerSecond(now = Date.now()): number {
    this.trim(now);
    return this.recent.length / (this.windowMs / 1000);
  }

  private trim(now: number): void {
    let i = 0;
    while (i < this.recent.length && this.recent[i]! < now - this.windowMs) i++;
    if (i) this.recent.splice(0, i);
  }

  text(): string {
    const g = this.gauges();
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [string, number][]): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) lines.push(`${name}${labels} ${Number.isFinite(v) ? v : 0}`);
    };
    const req: [string, number][] = [...this.requests].map(([k, v]) => {
      const [endpoint, status] = k.split('\u0000');
      return [`{endpoint="${endpoint}",status="${status}"}`, v];
    });
    metric('attn_requests_total', 'counter', 'HTTP requests answered, by endpoint and status.', req);
    metric('attn_generated_tokens_total', 'counter', 'Tokens generated.', [['', this.generatedTokens]]);
    metric('attn_prompt_tokens_total', 'counter', 'Prompt tokens prefilled.', [['', this.promptTokens]]);
    metric('attn_decode_steps_total', 'counter', 'Batched decode steps run.', [['', this.decodeSteps]]);
    metric('attn_decode_rows_total', 'counter', 'Sequences over all decode steps (rows / steps = mean batch).', [['', this.decodeRows]]);
    metric('attn_tokens_per_second', 'gauge', 'Generated tokens per second over the last 10 s.', [['', this.tokensPerSecond()]]);
    metric('attn_queue_length', 'gauge', 'Sequences waiting for a batch slot.', [['', g.queue]]);
    metric('attn_batch_size', 'gauge', 'Sequences holding a batch slot (their KV caches) now.', [['', g.batch]]);
    metric('attn_requests_running', 'gauge', 'HTTP requests being generated.', [['', g.running]]);
    metric('attn_step_seconds_total', 'counter', 'Seconds of scheduler work, by phase (prefill: prompt tokens\' share of the forwards; forward: decode rows\' share; sample: sampling and token events).',
      Object.entries(this.stepSeconds).map(([phase, v]) => [`{phase="${phase}"}`, v]));
    metric('attn_time_to_first_token_seconds', 'summary', 'Time from a request to its first token.', [['_sum', this.ttftSum], ['_count', this.ttftCount]]);
    return `${lines.join('\n')}\n`; // the summary's '_sum' / '_count' "labels" are name suffixes
  }
}
