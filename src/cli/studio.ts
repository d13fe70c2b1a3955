// attn studio: serves the studio page (examples/studio: train, fine-tune and look inside a GPT
// in the browser tab) on 127.0.0.1 with the cross-origin isolation headers SharedArrayBuffer
// needs, or (--out DIR) writes it as static files for any web host.
import { createServer, type Server } from 'node:http';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, extname, join, normalize, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Flags, UsageError } from './args.js';

/** The package root (dist/src/cli/ → ../../..), where examples/, dist/ and data/ are. */
export const PACKAGE_ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const PAGE = 'examples/studio';
const BUNDLED_TEXT = 'data/tinyshakespeare/input.txt';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8', '.css': 'text/css; charset=utf-8', '.wasm': 'application/wasm',
  '.png': 'image/png', '.svg': 'image/svg+xml', '.txt': 'text/plain; charset=utf-8', '.safetensors': 'application/octet-stream',
};

/** The headers that make the page cross-origin isolated (SharedArrayBuffer for both backends). */
export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/** Serves `root` (read-only, nothing outside it) with the isolation headers; resolves once listening. */
export async function startStudioServer(o: { root?: string; port?: number; host?: string } = {}): Promise<{ server: Server; url: string }> {
  const root = resolve(o.root ?? PACKAGE_ROOT);
  const server = createServer(async (req, res) => {
    const headers = { ...ISOLATION_HEADERS, 'Cache-Control': 'no-store' };
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { ...headers, 'Content-Type': 'text/plain' });
        res.end('only GET and HEAD\n');
        return;
      }
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      if (path === '/') {
        res.writeHead(302, { ...headers, Location: `/${PAGE}/` });
        res.end();
        return;
      }
      let file = normalize(join(root, path));
      if (file !== root && !file.startsWith(root + sep)) throw Object.assign(new Error('outside the root'), { code: 'ENOENT' });
      if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
      const body = await readFile(file);
      res.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const missing = code === 'ENOENT' || code === 'ENOTDIR';
      res.writeHead(missing ? 404 : 500, { ...headers, 'Content-Type': 'text/plain' });
      res.end(missing ? 'not found\n' : `${(e as Error).message}\n`);
    }
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(o.port ?? 8080, o.host ?? '127.0.0.1', ok);
  });
  const addr = server.address() as { port: number };
  return { server, url: `http://${o.host ?? '127.0.0.1'}:${addr.port}/${PAGE}/` };
}

/** Relative module specifiers a compiled file imports (static, re-exports and dynamic). */
function relativeImports(source: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g;
  // Only modules: new URL('../../', ...) of a folder (the native addon's root in Node) is not one.
  for (let m = re.exec(source); m; m = re.exec(source)) if (/\.m?js$/.test(m[1]!)) out.push(m[1]!);
  return out;
}

/**
 * Writes the page as static files into `outDir`: the page, the compiled modules it reaches
 * (followed from its imports, worker URLs included), the bundled text, and a _headers file with
 * the isolation headers (Netlify / Cloudflare Pages read it; other hosts must send them too).
 */
export async function buildStudio(outDir: string, root = PACKAGE_ROOT): Promise<{ files: string[] }> {
  outDir = resolve(outDir);
  const copied = new Set<string>();
  const queue = ['index.html', 'main.js', 'worker.js'].map((f) => join(root, PAGE, f));
  while (queue.length) {
    const file = queue.pop()!;
    const rel = relative(root, file);
    if (copied.has(rel)) continue;
    if (rel.startsWith('..')) throw new Error(`the page imports ${file}, outside ${root}`);
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch (e) {
      throw new Error(`${rel} is missing${rel.startsWith('dist') ? ' (run the build: npx tsc -p tsconfig.json)' : ''}: ${(e as Error).message}`);
    }
    copied.add(rel);
    await mkdir(dirname(join(outDir, rel)), { recursive: true });
    await writeFile(join(outDir, rel), body);
    if (file.endsWith('.js')) for (const spec of relativeImports(body.toString('utf8'))) queue.push(resolve(dirname(file), spec));
  }
  await mkdir(dirname(join(outDir, BUNDLED_TEXT)), { recursive: true });
  await copyFile(join(root, BUNDLED_TEXT), join(outDir, BUNDLED_TEXT));
  copied.add(BUNDLED_TEXT);
  await writeFile(join(outDir, 'index.html'), `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=${PAGE}/"><a href="${PAGE}/">attn studio</a>\n`);
  await writeFile(join(outDir, '_headers'), `/*\n${Object.entries(ISOLATION_HEADERS).map(([k, v]) => `  ${k}: ${v}`).join('\n')}\n`);
  return { files: [...copied, 'index.html', '_headers'].sort() };
}

export async function runStudio(f: Flags): Promise<void> {
  const out = f.string('out');
  const port = f.number('port', { integer: true, min: 0, max: 65535 }) ?? 8080;
  f.done();
  if (out !== undefined) {
    if (out === '') throw new UsageError('studio: --out needs a directory');
    const { files } = await buildStudio(out);
    console.log(`wrote the studio (${files.length} files) to ${resolve(out)}; serve it with these headers on every response:`);
    for (const [k, v] of Object.entries(ISOLATION_HEADERS)) console.log(`  ${k}: ${v}`);
    console.log(`(${join(resolve(out), '_headers')} says so for Netlify and Cloudflare Pages)`);
    return;
  }
  const { server, url } = await startStudioServer({ port });
  console.log(`attn studio: ${url}`);
  console.log('(listening on 127.0.0.1 only; Ctrl-C stops it)');
  await new Promise<void>((done) => {
    const stop = (): void => {
      server.close(() => done());
      server.closeAllConnections();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
