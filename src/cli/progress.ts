// A progress bar on stderr: done/total, a bar, throughput, elapsed and time left. On a
// terminal it redraws one line; elsewhere (CI, pipes) it prints a line every few seconds.

export interface ProgressOptions {
  label?: string;
  /** Unit of the rate, e.g. 'tok/s'. */
  unit?: string;
  stream?: NodeJS.WriteStream;
  /** Minimum milliseconds between non-terminal lines. */
  plainIntervalMs?: number;
}

function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export function formatRate(x: number): string {
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

export class ProgressBar {
  private readonly start = performance.now();
  private lastPlain = 0;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private lastLen = 0;

  constructor(private readonly total: number, private readonly opts: ProgressOptions = {}) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = Boolean(this.stream.isTTY);
  }

  /** done: units finished; rate: units per second for display (e.g. tokens/s); info: extra text. */
  update(done: number, rate: number, info = ''): void {
    const elapsed = (performance.now() - this.start) / 1000;
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const eta = done > 0 ? (elapsed / done) * (this.total - done) : NaN;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const label = this.opts.label ? `${this.opts.label} ` : '';
    const line = `${label}${bar} ${done}/${this.total} ${info} ${formatRate(rate)} ${this.opts.unit ?? 'it/s'} ${clock(elapsed)} elapsed, ${clock(eta)} left`;
    if (this.tty) {
      const pad = Math.max(0, this.lastLen - line.length);
      this.stream.write(`\r${line}${' '.repeat(pad)}`);
      this.lastLen = line.length;
    } else {
      const now = performance.now();
      if (now - this.lastPlain >= (this.opts.plainIntervalMs ?? 5000) || done >= this.total) {
        this.stream.write(`${line}\n`);
        this.lastPlain = now;
      }
    }
  }

  /** Prints a message above the bar without breaking it. */
  log(message: string): void {
    if (this.tty && this.lastLen > 0) {
      this.stream.write(`\r${' '.repeat(this.lastLen)}\r`);
      this.lastLen = 0;
    }
    this.stream.write(`${message}\n`);
  }

  finish(): void {
    if (this.tty && this.lastLen > 0) this.stream.write('\n');
    this.lastLen = 0;
  }
}
