// Chat templates: a conversation rendered into the one string a chat model was trained on, by
// the Jinja template in its tokenizer_config.json (`chat_template`), with Hugging Face's
// variables (messages, bos_token, eos_token, add_generation_prompt). Rendering is
// @huggingface/jinja's, the engine transformers.js uses: the field's own, not a copy.
import { Template } from '@huggingface/jinja';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplate {
  /** The Jinja source. */
  source: string;
  bosToken: string | null;
  eosToken: string | null;
}

/** A special token as tokenizer_config.json writes it: a string or {"content": ...}. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/**
 * The chat template of a tokenizer_config.json object (or of a chat_template.jinja file's text,
 * which newer checkpoints ship instead), or null when it has none. A list of named templates
 * (`[{name, template}]`) yields the one named 'default'.
 */
export function chatTemplateOf(tokenizerConfig: Record<string, unknown>, jinjaFile?: string): ChatTemplate | null {
  let source: string | null = jinjaFile ?? null;
  const t = tokenizerConfig['chat_template'];
  if (source === null && typeof t === 'string') source = t;
  if (source === null && Array.isArray(t)) {
    const named = t as { name?: unknown; template?: unknown }[];
    const d = named.find((x) => x.name === 'default') ?? named[0];
    if (d && typeof d.template === 'string') source = d.template;
  }
  if (source === null) return null;
  return { source, bosToken: tokenText(tokenizerConfig['bos_token']), eosToken: tokenText(tokenizerConfig['eos_token']) };
}

const compiled = new Map<string, Template>();

/**
 * The conversation as the model's prompt. addGenerationPrompt (default true) ends it with the
 * assistant's turn header, so the model's next tokens are its reply. Template errors (a role the
 * template refuses, a syntax it lacks) come back naming the template's message.
 */
export function renderChat(template: ChatTemplate, messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean; extra?: Record<string, unknown> } = {}): string {
  let tpl = compiled.get(template.source);
  if (!tpl) {
    try {
      tpl = new Template(template.source);
    } catch (e) {
      throw new Error(`chat template: cannot parse it: ${(e as Error).message}`);
    }
    compiled.set(template.source, tpl);
  }
  try {
    return tpl.render({
      ...opts.extra,
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      bos_token: template.bosToken ?? '',
      eos_token: template.eosToken ?? '',
      add_generation_prompt: opts.addGenerationPrompt ?? true,
    });
  } catch (e) {
    throw new Error(`chat template: ${(e as Error).message}`);
  }
}
