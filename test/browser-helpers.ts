// What the headless-Chromium tests share: Debian's /usr/bin/chromium driven by playwright-core
// (typed here by the few calls the tests make, so the tests compile without its types), the
// flags a root user in a container without network or display needs, and the skip rule
// (a missing browser skips, unless ATTN_REQUIRE_BROWSER=1).
import { existsSync } from 'node:fs';

export const CHROMIUM = process.env.ATTN_CHROMIUM ?? '/usr/bin/chromium';
export const REQUIRE_BROWSER = process.env.ATTN_REQUIRE_BROWSER === '1';

/** Flags for a root user in a container without network or display; WebGPU on SwiftShader
 *  (software Vulkan, shipped with Chromium) when there is no GPU. */
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
  '--disable-dev-shm-usage', '--enable-unsafe-webgpu',
];

export interface Download {
  saveAs(path: string): Promise<void>;
  suggestedFilename(): string;
}

export interface Page {
  goto(url: string): Promise<unknown>;
  reload(): Promise<unknown>;
  on(event: 'console' | 'pageerror', f: (x: { text?(): string; message?: string }) => void): void;
  waitForFunction(f: string, arg?: unknown, o?: { timeout: number }): Promise<unknown>;
  waitForEvent(e: 'download'): Promise<Download>;
  click(sel: string): Promise<void>;
  fill(sel: string, v: string): Promise<void>;
  selectOption(sel: string, v: string): Promise<unknown>;
  setInputFiles(sel: string, files: string[]): Promise<void>;
  textContent(sel: string): Promise<string | null>;
  getAttribute(sel: string, name: string): Promise<string | null>;
  evaluate<T>(f: string): Promise<T>;
  $$(sel: string): Promise<{ getAttribute(n: string): Promise<string | null> }[]>;
  screenshot(o: { path?: string; fullPage?: boolean }): Promise<Buffer>;
  close(): Promise<void>;
}

export interface Browser {
  newPage(o?: { viewport?: { width: number; height: number }; acceptDownloads?: boolean }): Promise<Page>;
  close(): Promise<void>;
}

export interface Playwright {
  chromium: { launch(o: { executablePath: string; args: string[]; headless: boolean }): Promise<Browser> };
}

/** playwright-core, or why the browser tests cannot run here. */
export async function loadPlaywright(): Promise<Playwright | string> {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is missing (apt-get install chromium)`;
  try {
    return (await import('playwright-core' as string)) as Playwright;
  } catch {
    return 'playwright-core is not installed (npm install --save-dev playwright-core)';
  }
}
