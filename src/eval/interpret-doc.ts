// The JSON document `attn viz` serves and writes (--out), and that the browser views in
// src/viz/render.ts draw. Types only, so the browser module can import them without pulling in
// any model code.

/** One candidate of the logit lens: a token id, its text and its probability. */
export interface LensEntry {
  id: number;
  token: string;
  p: number;
}

/** Token attributions of one scalar output (a next-token logit or a class logit). */
export interface AttributionDoc {
  /** What was explained, in words (e.g. 'logit of " the" after position 5'). */
  target: string;
  /** Gradient × input per token (summed over the embedding features). */
  gradInput: number[];
  /** Integrated gradients per token from an all-zero token-embedding baseline. */
  integratedGradients: number[];
  steps: number;
  /** f(x) and f(baseline): integrated gradients sum to their difference (completeness). */
  fInput: number;
  fBaseline: number;
  /** Σ integratedGradients. */
  sum: number;
}

export interface VizDocument {
  version: 1;
  model: {
    /** 'gpt' (attn GPT, GPT-2), 'decoder' (llama, mistral, qwen, phi), 'classifier' (attn BertModel with a head). */
    kind: 'gpt' | 'decoder' | 'classifier';
    layers: number;
    heads: number;
    description: string;
  };
  text: string;
  /** Each token's text and id. */
  tokens: string[];
  ids: number[];
  /** attention[layer][head][query][key]: the softmax probabilities (rows sum to 1). */
  attention: number[][][][];
  /** Logit lens: lens[layer][position] holds the top-k next tokens read from the residual stream
   *  after `layer` blocks (0 = the embeddings), through the final norm and the LM head.
   *  Null for classifiers. */
  lens: { k: number; labels: string[]; top: LensEntry[][][] } | null;
  attributions: AttributionDoc[];
  /** Head ablation: the loss on the text with each head's output zeroed, minus the intact loss. */
  ablation: { metric: string; base: number; delta: number[][] } | null;
  /** Classifiers: the class probabilities of the text. */
  classes?: { probs: number[]; predicted: number };
}
