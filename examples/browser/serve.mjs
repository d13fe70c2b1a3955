// A static file server for the browser example, serving the repository root (so /dist and a
// checkpoint directory are reachable) with the headers that make the page cross-origin
// isolated, which SharedArrayBuffer (and so both backends) needs:
//   node examples/browser/serve.mjs [port]      (or PORT=...; default 8080; 0 = any free port)
// then open the printed URL. ?checkpoint=/path/to/dir/ picks a checkpoint (relative to the
// repository root), ?device=cpu forces the cpu backend.
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8', '.map': 'application/json; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm', '.png': 'image/png', '.svg': 'image/svg+xml', '.txt': 'text/plain; charset=utf-8',
};

/**
 * Starts the server; resolves with it and its URL once listening. `mounts` maps URL prefixes
 * ('/ckpt/') to other directories (a checkpoint outside the repository).
 */
export async function serve({ root = resolve(fileURLToPath(new URL('../..', import.meta.url))), port = 8080, host = '127.0.0.1', mounts = {} } = {}) {
  root = resolve(root);
  const server = createServer(async (req, res) => {
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin',
      'Cache-Control': 'no-store',
    };
    try {
      let path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      let base = root;
      for (const [prefix, dir] of Object.entries(mounts)) {
        if (path.startsWith(prefix)) {
          base = resolve(dir);
          path = path.slice(prefix.length);
          break;
        }
      }
      let file = normalize(join(base, path));
      if (file !== base && !file.startsWith(base + sep)) throw Object.assign(new Error('outside the root'), { code: 'ENOENT' });
      if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
      const body = await readFile(file);
      res.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      const code = e.code === 'ENOENT' || e.code === 'ENOTDIR' ? 404 : 500;
      res.writeHead(code, { ...headers, 'Content-Type': 'text/plain' });
      res.end(code === 404 ? 'not found\n' : `${e.message}\n`);
    }
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, ok);
  });
  const url = `http://${host}:${server.address().port}/`;
  return { server, url };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? process.env.PORT ?? 8080);
  const { url } = await serve({ port });
  console.log(`serving the repository root at ${url}`);
  console.log(`open ${url}examples/browser/  (the checkpoint of \`attn train --preset shakespeare-char-tiny\` run in the repository root;`);
  console.log('  ?checkpoint=/URL/of/a/checkpoint/dir/ for another, &device=cpu to force the cpu backend)');
}
