// The lowest file layer of the tokenizers: node:fs, imported on demand (so importing this
// module is harmless in a browser; only calling into it needs Node), and writeFiles, which the
// tokenizers' save methods and ./io.ts share.

export type Fs = typeof import('node:fs/promises');
export const fs = (): Promise<Fs> => import('node:fs/promises');
export const join = (dir: string, name: string): string => (dir.endsWith('/') ? dir + name : `${dir}/${name}`);

/** Writes name -> contents files into dir, creating dir if needed. */
export async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  const f = await fs();
  await f.mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) await f.writeFile(join(dir, name), text, 'utf8');
}
