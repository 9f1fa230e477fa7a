#!/usr/bin/env python3
"""PyTorch reference rows for `tril bench`.

Each row mirrors one workload that tril runs itself (see bench/README.md); `tril bench`
runs this script with the same --rows/--size/--threads/--device/--precision and puts the
two timings side by side.

Contract (tril's Rust side parses this, keep it stable):
  stdout: ONLY JSON lines, one per measurement,
      {"row": ..., "impl": ..., "seconds": <median>, "phases": {name: <median>, ...}}
    or, when a row fails,
      {"row": ..., "impl": ..., "error": "..."}
  stderr: logs.
Every measurement: one untimed warm-up run, then --repeats timed runs, median reported.
Weights are random (transformers configs, `from_config`, all dropout 0), torch.manual_seed(0).
bf16: parameters in bfloat16, log-softmax / losses in float32 (`logits.float()`).
"""

import argparse
import copy
import inspect
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: never touch the network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# Everything that libraries print goes to stderr; JSON lines go to the real stdout.
RESULTS = sys.stdout
sys.stdout = sys.stderr

ROWS = ["forward", "train", "train_tiny", "generate", "ppo", "dpo"]


def log(msg):
    print(f"[torch_bench] {msg}", file=sys.stderr, flush=True)


def emit(record):
    RESULTS.write(json.dumps(record) + "\n")
    RESULTS.flush()


# ---------------------------------------------------------------------------------------
# Shared helpers: timing, models, log-probs, sampling
# ---------------------------------------------------------------------------------------


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Phases:
    """Per-run phase clock: `lap(name)` syncs the device and adds the time since the last lap."""

    def __init__(self, device):
        self.device = device
        self.times = {}
        sync(device)
        self.t = time.perf_counter()

    def lap(self, name):
        sync(self.device)
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + (now - self.t)
        self.t = now


def measure(ctx, row, impl, work, seconds_from_phases=False):
    """One untimed warm-up run of `work(phases)`, then ctx.repeats timed runs; emits the medians.

    `work` receives a fresh Phases clock and may call `phases.lap(name)`; `seconds` is the
    median wall time of a run, or (seconds_from_phases) the median of the per-run phase sums.
    """
    log(f"{row}/{impl}: warm-up")
    work(Phases(ctx.device))
    walls, per_phase = [], {}
    for i in range(ctx.repeats):
        sync(ctx.device)
        t0 = time.perf_counter()
        phases = Phases(ctx.device)
        work(phases)
        sync(ctx.device)
        wall = time.perf_counter() - t0
        walls.append(sum(phases.times.values()) if seconds_from_phases else wall)
        for name, sec in phases.times.items():
            per_phase.setdefault(name, []).append(sec)
        log(f"{row}/{impl}: repeat {i + 1}/{ctx.repeats}: {walls[-1]:.4f} s {fmt(phases.times)}")
    record = {"row": row, "impl": impl, "seconds": statistics.median(walls)}
    if per_phase:
        record["phases"] = {name: statistics.median(v) for name, v in per_phase.items()}
    emit(record)


def fmt(phases):
    return " ".join(f"{k}={v:.4f}" for k, v in phases.items())


def gpt2_config(n_layer, vocab=50257, n_positions=1024, n_embd=768, n_head=12):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
    )


def prepare(ctx, model):
    """Random init is done by the caller after torch.manual_seed(0); eval mode, device, dtype."""
    return model.eval().to(device=ctx.device, dtype=ctx.dtype)


def gpt2_lm(ctx, cfg):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return prepare(ctx, AutoModelForCausalLM.from_config(cfg))


def gpt2_trunk(ctx, cfg):
    from transformers import AutoModel

    torch.manual_seed(0)
    return prepare(ctx, AutoModel.from_config(cfg))


def random_ids(ctx, shape, vocab):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, shape, generator=g).to(ctx.device)


def adamw(params):
    return torch.optim.AdamW(params, lr=1e-5, eps=1e-5, weight_decay=0.0)


def next_token_logprobs(logits, ids):
    """log p(ids[:, t+1] | ids[:, :t+1]) in float32: [B, T, V], [B, T] -> [B, T-1]."""
    return torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def sample_top_k(logits, k=50):
    """Top-k filter -> softmax (temperature 1) -> multinomial: [B, V] -> [B, 1]."""
    logits = logits.float()
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1)


def cache_kwarg(model):
    """transformers >= 5.2x renamed `past_key_values` to `cache`; accept both versions."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@torch.no_grad()
def kv_generate(model, prompt, n_new, phases=None):
    """Hand-written KV-cache sampling loop: prefill, then one token per step. -> [B, P + n_new].

    The prefill only projects the last position onto the vocabulary (`logits_to_keep=1`, as
    HF generate does); each step feeds the one new token with the cache."""
    cache_kw = cache_kwarg(model)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(prompt, use_cache=True, **keep)
    cache = output_cache(out)
    tok = sample_top_k(out.logits[:, -1])
    if phases is not None:
        phases.lap("prefill")
    tokens = [tok]
    for _ in range(n_new - 1):
        out = model(tok, use_cache=True, **{cache_kw: cache})
        cache = output_cache(out)
        tok = sample_top_k(out.logits[:, -1])
        tokens.append(tok)
    if phases is not None:
        phases.lap("decode")
    return torch.cat([prompt] + tokens, dim=1)


def lm_layers(ctx):
    return 12 if ctx.size == "full" else 2


def lm_batch(ctx):
    """(batch, tokens) of the forward/train rows."""
    return (8, 512) if ctx.size == "full" else (4, 256)


def train_step(model, opt, ids):
    """forward + mean next-token NLL + backward + AdamW step + zero_grad (tril's `train` rows)."""
    logits = model(ids, use_cache=False).logits
    loss = -next_token_logprobs(logits, ids).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss


# ---------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------


def row_forward(ctx):
    """GPT-2 forward (no cache) + next-token log-probs under no_grad: the scoring pass of tril."""
    model = gpt2_lm(ctx, gpt2_config(lm_layers(ctx)))
    ids = random_ids(ctx, lm_batch(ctx), 50257)

    def work(phases):
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits
            next_token_logprobs(logits, ids)

    measure(ctx, "forward", "torch", work)


def row_train(ctx):
    """One supervised step on GPT-2: forward + NLL + backward + AdamW."""
    model = gpt2_lm(ctx, gpt2_config(lm_layers(ctx)))
    ids = random_ids(ctx, lm_batch(ctx), 50257)
    opt = adamw(model.parameters())
    measure(ctx, "train", "torch", lambda phases: train_step(model, opt, ids))


def row_train_tiny(ctx):
    """The same step on a tiny GPT-2 (vocab 512, width 64, 2 layers): measures per-op overhead."""
    cfg = gpt2_config(2, vocab=512, n_positions=256, n_embd=64, n_head=4)
    model = gpt2_lm(ctx, cfg)
    ids = random_ids(ctx, (8, 128), 512)
    opt = adamw(model.parameters())
    measure(ctx, "train_tiny", "torch", lambda phases: train_step(model, opt, ids))


def row_generate(ctx):
    """Top-k 50 sampling with a KV cache, fixed length: HF `generate` and a hand-written loop."""
    batch, prompt_len, n_new = (32, 64, 128) if ctx.size == "full" else (8, 64, 32)
    model = gpt2_lm(ctx, gpt2_config(lm_layers(ctx)))
    prompt = random_ids(ctx, (batch, prompt_len), 50257)
    mask = torch.ones_like(prompt)

    def hf(phases):
        with torch.no_grad():
            model.generate(
                prompt,
                attention_mask=mask,
                do_sample=True,
                top_k=50,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                pad_token_id=0,
                use_cache=True,
            )

    run_impl(ctx, "generate", "hf_generate", lambda: measure(ctx, "generate", "hf_generate", hf))
    run_impl(
        ctx,
        "generate",
        "kv_loop",
        lambda: measure(ctx, "generate", "kv_loop", lambda phases: kv_generate(model, prompt, n_new, phases)),
    )


# --- PPO ---------------------------------------------------------------------------------
# One iteration of TRIL's PPO (src/tril/algorithms/ppo.py; tril's Rust port is
# crates/tril-algorithms/src/onpolicy/ppo.rs) on the IMDB shapes: rollout, reward,
# rollout statistics, then epochs of clipped-surrogate minibatch updates.


def ppo_shapes(ctx):
    if ctx.size == "full":
        return dict(n=112, prompt=64, new=48, epochs=5, minibatch=28)
    return dict(n=28, prompt=32, new=16, epochs=1, minibatch=14)


class Critic(nn.Module):
    """TRIL's separate critic: its own GPT-2 trunk + a linear value head on the last hidden state."""

    def __init__(self, trunk):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.config.n_embd, 1)

    def forward(self, ids):
        return self.head(self.trunk(ids, use_cache=False).last_hidden_state).squeeze(-1)  # [B, T]


def ppo_models(ctx):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    L = lm_layers(ctx)
    policy = gpt2_lm(ctx, gpt2_config(L))
    reference = copy.deepcopy(policy).requires_grad_(False)  # frozen copy of the initial policy
    trunk = gpt2_trunk(ctx, gpt2_config(L))
    torch.manual_seed(0)
    critic = prepare(ctx, Critic(trunk))
    reward_cfg = DistilBertConfig(
        vocab_size=30522,
        n_layers=6 if ctx.size == "full" else 2,
        dim=768,
        n_heads=12,
        hidden_dim=3072,
        dropout=0.0,
        attention_dropout=0.0,
        seq_classif_dropout=0.0,
        num_labels=2,
    )
    torch.manual_seed(0)
    reward = prepare(ctx, DistilBertForSequenceClassification(reward_cfg)).requires_grad_(False)
    return policy, reference, critic, reward


def action_logprobs_entropy(model, seq, prompt_len):
    """Log-probs and entropies of the generated tokens seq[:, P:] (logits at P-1 .. T-2): [B, G]."""
    logits = model(seq, use_cache=False).logits[:, prompt_len - 1 : -1].float()
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, seq[:, prompt_len:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def state_values(critic, seq, prompt_len):
    """V(s_t) of the state before each generated token: [B, G]."""
    return critic(seq)[:, prompt_len - 1 : -1].float()


def ppo_generate(policy, prompts, n_new):
    """Rollout: all trajectories in one batch (TRIL's batch_size_per_process 112), top-k 50."""
    return kv_generate(policy, prompts, n_new)


@torch.no_grad()
def ppo_reward(reward_model, seq):
    """Classifier score of prompt+generation, P(label 1); GPT-2 ids mapped with `% 30522`."""
    logits = reward_model(input_ids=seq % 30522, attention_mask=torch.ones_like(seq)).logits
    return torch.softmax(logits.float(), -1)[:, 1]  # [N]


@torch.no_grad()
def ppo_reference_values(policy, reference, critic, seq, prompt_len, chunk):
    """Rollout statistics (TRIL's OnlineBuffer fill): old log-probs + entropy, reference log-probs,
    old values. Evaluated in chunks of `chunk` trajectories to bound the [B, T, V] logits."""
    logp, ent, ref_logp, values = [], [], [], []
    for s in seq.split(chunk):
        lp, e = action_logprobs_entropy(policy, s, prompt_len)
        rlp, _ = action_logprobs_entropy(reference, s, prompt_len)
        logp.append(lp)
        ent.append(e)
        ref_logp.append(rlp)
        values.append(state_values(critic, s, prompt_len))
    return torch.cat(logp), torch.cat(ent), torch.cat(ref_logp), torch.cat(values)


def gae(rewards, values, gamma=0.99, lam=0.95):
    """GAE as TRIL's OnlineBuffer (no padding here, V_T = 0): returns (advantages, returns)."""
    n, t = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(n, device=rewards.device)
    for i in reversed(range(t)):
        next_value = values[:, i + 1] if i + 1 < t else torch.zeros_like(last)
        delta = rewards[:, i] + gamma * next_value - values[:, i]
        last = delta + gamma * lam * last
        advantages[:, i] = last
    return advantages, advantages + values


def ppo_update(policy, critic, opt, seq, prompt_len, score, old_logp, ref_logp, old_values, shp):
    """Per-token rewards, GAE, then n_epochs x (N / minibatch) clipped PPO steps (TRIL's
    PPO.train_step: policy_loss + vf_coef * value_loss + ent_coef * entropy_loss, ent_coef 0)."""
    clip, clip_vf, vf_coef, kl_coef = 0.2, 0.2, 0.5, 0.001
    # Rewards: KL penalty per token, the classifier score added on the last token.
    rewards = -kl_coef * (old_logp - ref_logp)
    rewards[:, -1] += score
    advantages, returns = gae(rewards, old_values)
    params = [p for p in list(policy.parameters()) + list(critic.parameters()) if p.requires_grad]
    n = seq.shape[0]
    for _ in range(shp["epochs"]):
        for mb in torch.randperm(n, device=seq.device).split(shp["minibatch"]):
            logp, entropy = action_logprobs_entropy(policy, seq[mb], prompt_len)
            values = state_values(critic, seq[mb], prompt_len)
            # Clipped surrogate (ppo.py lines 105-132); all tokens are valid (no early stop).
            ratio = torch.exp(logp - old_logp[mb])
            adv = advantages[mb]
            policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
            # Clipped value loss around the rollout values (ppo.py lines 152-186), with its 1/2.
            v_clipped = old_values[mb] + (values - old_values[mb]).clamp(-clip_vf, clip_vf)
            value_loss = 0.5 * torch.max((values - returns[mb]) ** 2, (v_clipped - returns[mb]) ** 2).mean()
            entropy_loss = -entropy.mean()  # coefficient 0, computed as TRIL does
            loss = policy_loss + vf_coef * value_loss + 0.0 * entropy_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()


def row_ppo(ctx):
    """One PPO iteration (torch reference loop), phases generate/reward/reference_values/update."""
    shp = ppo_shapes(ctx)
    policy, reference, critic, reward_model = ppo_models(ctx)
    opt = adamw([p for p in list(policy.parameters()) + list(critic.parameters()) if p.requires_grad])
    prompts = random_ids(ctx, (shp["n"], shp["prompt"]), 50257)

    def work(phases):
        seq = ppo_generate(policy, prompts, shp["new"])
        phases.lap("generate")
        score = ppo_reward(reward_model, seq)
        phases.lap("reward")
        old_logp, _entropy, ref_logp, old_values = ppo_reference_values(
            policy, reference, critic, seq, shp["prompt"], shp["minibatch"]
        )
        phases.lap("reference_values")
        ppo_update(policy, critic, opt, seq, shp["prompt"], score, old_logp, ref_logp, old_values, shp)
        phases.lap("update")

    run_impl(ctx, "ppo", "torch", lambda: measure(ctx, "ppo", "torch", work, seconds_from_phases=True))
    run_impl(ctx, "ppo", "trl_ppo", lambda: row_ppo_trl(ctx))


def row_ppo_trl(ctx):
    """TRL's PPOTrainer on the same shapes, when the installed trl has one."""
    import trl

    has_top = hasattr(trl, "PPOTrainer")
    try:
        import trl.experimental.ppo  # noqa: F401

        has_exp = True
    except ImportError:
        has_exp = False
    if not (has_top or has_exp):
        raise RuntimeError(
            f"trl {trl.__version__} has no PPOTrainer (neither trl.PPOTrainer nor trl.experimental.ppo exists)"
        )
    raise RuntimeError(f"trl {trl.__version__} has a PPOTrainer, but this script does not drive it yet")


def row_dpo(ctx):
    """One DPO step: chosen+rejected in one forward, summed completion log-probs (second half),
    sigmoid loss (beta 0.1) against precomputed reference log-probs, backward, AdamW."""
    pairs, tokens = lm_batch(ctx)
    beta = 0.1
    model = gpt2_lm(ctx, gpt2_config(lm_layers(ctx)))
    opt = adamw(model.parameters())
    ids = random_ids(ctx, (2 * pairs, tokens), 50257)  # rows [0, pairs) chosen, [pairs, 2 pairs) rejected
    g = torch.Generator().manual_seed(1)
    ref_logps = (-(tokens // 2) * 10.0 + torch.randn(2 * pairs, generator=g)).to(ctx.device)
    completion_start = tokens // 2  # first completion token; predicted by logits at index start-1

    def work(phases):
        logits = model(ids, use_cache=False).logits
        logps = next_token_logprobs(logits, ids)[:, completion_start - 1 :].sum(-1)  # [2 pairs]
        chosen, rejected = logps[:pairs], logps[pairs:]
        ref_chosen, ref_rejected = ref_logps[:pairs], ref_logps[pairs:]
        margin = (chosen - ref_chosen) - (rejected - ref_rejected)
        loss = -F.logsigmoid(beta * margin).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    measure(ctx, "dpo", "torch", work)


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------

ROW_FNS = {
    "forward": (row_forward, ["torch"]),
    "train": (row_train, ["torch"]),
    "train_tiny": (row_train_tiny, ["torch"]),
    "generate": (row_generate, ["hf_generate", "kv_loop"]),
    "ppo": (row_ppo, ["torch", "trl_ppo"]),
    "dpo": (row_dpo, ["torch"]),
}


def run_impl(ctx, row, impl, fn):
    """Run one measurement; on failure print its error line and keep going."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - one failing row must not stop the others
        log(f"{row}/{impl} failed: {type(e).__name__}: {e}")
        emit({"row": row, "impl": impl, "error": f"{type(e).__name__}: {e}"})
    finally:
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    p.add_argument("--size", choices=["small", "full"], default="small")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    p.add_argument("--repeats", type=int, default=3)
    ctx = p.parse_args()

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError as e:
            log(f"set_num_interop_threads(1) failed: {e}")
    ctx.device = torch.device(ctx.device)
    ctx.dtype = torch.bfloat16 if ctx.precision == "bf16" else torch.float32
    ctx.repeats = max(1, ctx.repeats)
    torch.manual_seed(0)
    log(
        f"torch {torch.__version__}, device {ctx.device}, {ctx.precision}, size {ctx.size}, "
        f"threads {torch.get_num_threads()}, repeats {ctx.repeats}"
    )

    rows = [r.strip() for r in ctx.rows.split(",") if r.strip()]
    for row in rows:
        if row not in ROW_FNS:
            emit({"row": row, "impl": "torch", "error": f"unknown row (known: {', '.join(ROWS)})"})
            continue
        fn, impls = ROW_FNS[row]
        if len(impls) == 1:
            run_impl(ctx, row, impls[0], lambda: fn(ctx))
        else:
            # Rows with several impls report their own errors per impl; a failure while
            # building the shared models is reported for every impl.
            try:
                fn(ctx)
            except Exception as e:  # noqa: BLE001
                log(f"{row} failed: {type(e).__name__}: {e}")
                for impl in impls:
                    emit({"row": row, "impl": impl, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
