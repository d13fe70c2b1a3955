// The SVG line plot: well-formed output, decade ticks on log axes, gaps for missing points.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decadeTicks, formatBytes, formatTick, linePlotSvg, linearTicks } from '../src/eval/plot.js';

/** Checks that every tag is closed in order (a small XML well-formedness check). */
function assertWellFormed(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z][\w-]*)([^>]*?)(\/?)>/g)) {
    const [, close, name, attrs, self] = m;
    assert.ok(!/[<&](?!#\d+;)/.test(attrs!.replace(/&#\d+;/g, '')), `bad characters in <${name}${attrs}>`);
    if (self) continue;
    if (close) assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
    else stack.push(name!);
  }
  assert.deepEqual(stack, [], 'unclosed elements');
  // Text outside tags has no raw < or & either.
  const text = svg.replace(/<[^>]*>/g, '');
  assert.ok(!/<|&(?!#\d+;)/.test(text), 'unescaped text');
  assert.ok(!/NaN|Infinity|undefined/.test(svg), 'a non-number leaked into the SVG');
}

const tickLabels = (svg: string, cls: string): string[] => [...svg.matchAll(new RegExp(`<text class="${cls}"[^>]*>([^<]*)</text>`, 'g'))].map((m) => m[1]!);

test('tick helpers', () => {
  assert.deepEqual(decadeTicks(1, 1000), [1, 10, 100, 1000]);
  assert.deepEqual(decadeTicks(3, 5000), [10, 100, 1000]);
  assert.deepEqual(decadeTicks(1e-3, 0.2), [0.001, 0.01, 0.1]);
  assert.deepEqual(linearTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.equal(formatTick(1000), '1k');
  assert.equal(formatTick(2.5e6), '2.5M');
  assert.equal(formatTick(0.001), '0.001');
  assert.equal(formatTick(1e-7), '1e-7');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(3 * 2 ** 30), '3 GiB');
});

test('log-log plot: decade ticks span the data, legend and labels present, well formed', () => {
  const svg = linePlotSvg(
    [
      { name: 'naive <dense>', points: [[128, 3], [256, 12], [512, 48], [1024, 190]] },
      { name: 'local & co', points: [[128, 2], [256, 4], [512, 8], [1024, 16]], dashed: true },
    ],
    { logX: true, logY: true, title: 'time vs T', xLabel: 'T', yLabel: 'ms' },
  );
  assertWellFormed(svg);
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  // y spans 2..190 -> decades 1, 10, 100, 1000 (the axis is widened to whole decades).
  assert.deepEqual(tickLabels(svg, 'ytick'), ['1', '10', '100', '1k']);
  // x spans 128..1024 -> decades 100, 1000, 10000.
  assert.deepEqual(tickLabels(svg, 'xtick'), ['100', '1k', '10k']);
  assert.ok(svg.includes('naive &#60;dense&#62;') && svg.includes('local &#38; co'), 'legend names escaped');
  assert.ok(svg.includes('>time vs T<') && svg.includes('>ms<'));
  assert.equal((svg.match(/<polyline/g) ?? []).length, 2);
  assert.ok(svg.includes('stroke-dasharray'));
});

test('explicit ticks and formatters on a log axis', () => {
  const svg = linePlotSvg([{ name: 'a', points: [[128, 1e6], [8192, 3e9]] }], { logX: true, logY: true, xTicks: [128, 1024, 8192], xFormat: String, yFormat: formatBytes });
  assertWellFormed(svg);
  assert.deepEqual(tickLabels(svg, 'xtick'), ['128', '1024', '8192']);
  assert.deepEqual(tickLabels(svg, 'ytick'), ['977 KiB', '9.54 MiB', '95.4 MiB', '954 MiB', '9.31 GiB']);
});

test('NaN, infinite, missing and (on log axes) non-positive points are gaps', () => {
  const svg = linePlotSvg(
    [
      { name: 'gappy', points: [[1, 1], [2, 2], [3, NaN], [4, 4], [5, 5], [6, 0], [7, Infinity]] },
      { name: 'empty', points: [] },
      { name: 'single', points: [[3, 3]], markers: false },
    ],
    { logY: true },
  );
  assertWellFormed(svg);
  // Two runs of two points each for 'gappy'; the others draw no line.
  assert.equal((svg.match(/<polyline/g) ?? []).length, 2);
  assert.ok(svg.includes('>empty<') && svg.includes('>single<'));
  // No data at all still gives a valid, finite plot.
  const none = linePlotSvg([{ name: 'x', points: [[NaN, NaN]] }], { logX: true, logY: true });
  assertWellFormed(none);
  const flat = linePlotSvg([{ name: 'x', points: [[1, 5], [2, 5]] }]);
  assertWellFormed(flat);
  assert.equal(linePlotSvg([]).includes('legend'), false);
});
