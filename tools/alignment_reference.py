"""PyTorch reference for attn's alignment losses (src/train/alignment.ts).

Draws small fixed inputs, computes each loss and its gradients with torch autograd in float64,
and writes inputs and outputs to test/fixtures/alignment/reference.json, which
test/alignment-losses.test.ts compares against within 1e-5. Written from the papers' formulas:
DPO (Rafailov et al. 2023, eq. 7), IPO (Azar et al. 2023, eq. 17), Bradley-Terry (Ouyang et al.
2022, eq. 1), PPO clipped objective (Schulman et al. 2017, eq. 7) with value clipping, GAE
(Schulman et al. 2016, eq. 16), KL-shaped rewards and the adaptive KL controller (Ziegler et al.
2019, section 2.2).

    /usr/bin/python3 tools/alignment_reference.py   (torch 1.13)
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(22)
D = torch.float64


def seq_logps(logits, targets):
    """Sum over the scored targets (targets != -100) of log softmax(logits)[target]."""
    logp = torch.log_softmax(logits, -1)
    mask = targets != -100
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    tok = torch.gather(logp, -1, safe.unsqueeze(-1)).squeeze(-1)
    return (tok * mask).sum(-1)


def lst(t):
    return t.detach().reshape(-1).tolist()


out = {}

# ---- DPO and IPO from logits: 3 pairs, 6 positions, vocabulary 7; prompts masked with -100.
N, T, V = 3, 6, 7
logits_c = torch.randn(N, T, V, dtype=D) * 1.5
logits_r = torch.randn(N, T, V, dtype=D) * 1.5
targets_c = torch.randint(0, V, (N, T))
targets_r = torch.randint(0, V, (N, T))
prompt_len = [2, 3, 1]
for i, p in enumerate(prompt_len):
    targets_c[i, :p] = -100
    targets_r[i, :p] = -100
targets_r[1, 5] = -100  # a shorter rejected response (padding)
ref_c = torch.randn(N, dtype=D) - 8.0
ref_r = torch.randn(N, dtype=D) - 8.0
out['pref_inputs'] = {
    'shape': [N, T, V], 'logits_chosen': lst(logits_c), 'logits_rejected': lst(logits_r),
    'targets_chosen': lst(targets_c), 'targets_rejected': lst(targets_r),
    'ref_chosen': lst(ref_c), 'ref_rejected': lst(ref_r),
}
for kind, beta in [('dpo', 0.1), ('dpo', 2.0), ('ipo', 0.5)]:
    lc = logits_c.clone().requires_grad_(True)
    lr = logits_r.clone().requires_grad_(True)
    pc = seq_logps(lc, targets_c)
    pr = seq_logps(lr, targets_r)
    h = (pc - ref_c) - (pr - ref_r)
    if kind == 'dpo':
        loss = -F.logsigmoid(beta * h).mean()
    else:
        loss = ((h - 1 / (2 * beta)) ** 2).mean()
    loss.backward()
    out[f'{kind}_beta{beta}'] = {
        'kind': kind, 'beta': beta, 'loss': loss.item(), 'policy_chosen': lst(pc), 'policy_rejected': lst(pr),
        'chosen_rewards': lst(beta * (pc - ref_c)), 'rejected_rewards': lst(beta * (pr - ref_r)),
        'grad_logits_chosen': lst(lc.grad), 'grad_logits_rejected': lst(lr.grad),
    }

# ---- Bradley-Terry on 8 pairs of scalar rewards.
rc = (torch.randn(8, dtype=D) * 2).requires_grad_(True)
rr = (torch.randn(8, dtype=D) * 2).requires_grad_(True)
bt = -F.logsigmoid(rc - rr).mean()
bt.backward()
out['bradley_terry'] = {'chosen': lst(rc), 'rejected': lst(rr), 'loss': bt.item(), 'grad_chosen': lst(rc.grad), 'grad_rejected': lst(rr.grad)}

# ---- PPO: 4 responses of up to 6 tokens; KL-shaped rewards, GAE per response, whitened
# advantages over the valid tokens, clipped policy and value losses.
B, L = 4, 6
lengths = [6, 4, 5, 2]
mask = torch.zeros(B, L, dtype=D)
for i, n in enumerate(lengths):
    mask[i, :n] = 1
old_logp = torch.randn(B, L, dtype=D) * 0.5 - 2.0
ref_logp = old_logp + torch.randn(B, L, dtype=D) * 0.3
new_logp = old_logp + torch.randn(B, L, dtype=D) * 0.3  # some ratios fall outside [0.8, 1.2]
old_values = torch.randn(B, L, dtype=D)
new_values = old_values + torch.randn(B, L, dtype=D) * 0.4
scores = torch.randn(B, dtype=D)
kl_coef, gamma, lam, clip, vclip = 0.05, 1.0, 0.95, 0.2, 0.2

rewards = torch.zeros(B, L, dtype=D)
adv = torch.zeros(B, L, dtype=D)
ret = torch.zeros(B, L, dtype=D)
for i, n in enumerate(lengths):
    r = -kl_coef * (old_logp[i, :n] - ref_logp[i, :n])
    r[n - 1] += scores[i]
    rewards[i, :n] = r
    last = 0.0
    for t in reversed(range(n)):
        nv = old_values[i, t + 1] if t + 1 < n else 0.0
        delta = r[t] + gamma * nv - old_values[i, t]
        last = delta + gamma * lam * last
        adv[i, t] = last
    ret[i, :n] = adv[i, :n] + old_values[i, :n]
valid = mask.bool()
flat = adv[valid]
white = torch.zeros(B, L, dtype=D)
white[valid] = (flat - flat.mean()) / (flat.std() + 1e-8)

lp = new_logp.clone().requires_grad_(True)
ratio = torch.exp(lp - old_logp)
pg = -torch.min(ratio * white, torch.clamp(ratio, 1 - clip, 1 + clip) * white)
pg_loss = (pg * mask).sum() / mask.sum()
pg_loss.backward()

v = new_values.clone().requires_grad_(True)
vc = old_values + torch.clamp(v - old_values, -vclip, vclip)
vf = torch.max((v - ret) ** 2, (vc - ret) ** 2)
vf_loss = 0.5 * (vf * mask).sum() / mask.sum()
vf_loss.backward()

out['ppo'] = {
    'shape': [B, L], 'lengths': lengths, 'old_logp': lst(old_logp), 'ref_logp': lst(ref_logp), 'new_logp': lst(new_logp),
    'old_values': lst(old_values), 'new_values': lst(new_values), 'scores': lst(scores),
    'kl_coef': kl_coef, 'gamma': gamma, 'lambda': lam, 'clip': clip, 'value_clip': vclip,
    'rewards': lst(rewards), 'advantages': lst(adv), 'returns': lst(ret), 'whitened': lst(white),
    'policy_loss': pg_loss.item(), 'grad_logp': lst(lp.grad), 'value_loss': vf_loss.item(), 'grad_values': lst(v.grad),
}

# ---- The adaptive KL controller over a sequence of measured KLs.
coef, target, horizon, steps = 0.2, 6.0, 10000.0, 256
kls = [2.0, 5.5, 6.0, 9.0, 20.0, 0.1]
trace = []
for kl in kls:
    e = min(max(kl / target - 1, -0.2), 0.2)
    coef *= 1 + e * steps / horizon
    trace.append(coef)
out['adaptive_kl'] = {'init': 0.2, 'target': target, 'horizon': horizon, 'steps': steps, 'kls': kls, 'values': trace}

path = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'alignment', 'reference.json')
with open(path, 'w') as f:
    json.dump(out, f)
print(f'wrote {os.path.normpath(path)} (torch {torch.__version__})')
