"""Train `opt-tiny`: a byte-level BPE tokenizer and a small pre-LayerNorm OPT from scratch on CPU.

Owns: the reproducible training recipe (tokenizer, model config, AdamW + warmup/cosine schedule,
fixed-seed data order), periodic resumable checkpoints under work/, held-out `wiki` perplexity,
and the shipped artefact: zoo/<key>/ (fp16 safetensors + tokenizer + model_card.json).

    python -m bench.train --arch opt --out zoo/opt-tiny --seed 0 --minutes 60
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from bench import outputs
from bench.zoo import mamba_scan
from bench.data import eval_token_ids, load_corpus
from bench.packages import work_dir
from methods.base import PruneBenchError

log = logging.getLogger(__name__)
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, the same layout as OPT's tokenizer


@dataclass
class Recipe:
    arch: str = "opt"
    seed: int = 0
    vocab_size: int = 8192
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 1024
    state_size: int = 16  # mamba only: SSM state per channel
    expand: int = 2  # mamba only: d_inner = expand * hidden_size
    seqlen: int = 512
    batch_size: int = 16  # sequences per optimiser step
    steps: int = 0  # 0: derive from --minutes with a short throughput probe
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16_autocast: bool = True  # CPU autocast; master weights and optimiser stay fp32
    compile: bool = True  # torch.compile the training forward (~25% faster on 2 cores)
    corpus: str = "train"
    eval_corpus: str = "wiki"
    eval_tokens: int = 65536
    eval_seqlen: int = 512


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(text: str, vocab_size: int, out: Path, model_max_length: int):
    """Train a byte-level BPE on `text` and save it (tokenizer.json + config) into `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    bos = tok.token_to_id("</s>")  # like OPT: "</s>" doubles as BOS and EOS
    tok.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   model_max_length=model_max_length)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return fast


# ----------------------------------------------------------------------------- model / data
def build_model(r: Recipe, tokenizer) -> torch.nn.Module:
    """A freshly initialised OPT (pre-LayerNorm) or Mamba from the recipe, seeded."""
    from transformers import MambaConfig, MambaForCausalLM, OPTConfig, OPTForCausalLM

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if r.arch == "opt":
        cfg = OPTConfig(vocab_size=len(tokenizer), hidden_size=r.hidden_size,
                        num_hidden_layers=r.num_layers, num_attention_heads=r.num_heads,
                        ffn_dim=r.ffn_dim, max_position_embeddings=max(r.seqlen, r.eval_seqlen),
                        word_embed_proj_dim=r.hidden_size, do_layer_norm_before=True,
                        dropout=0.0, attention_dropout=0.0, activation_function="relu",
                        tie_word_embeddings=True, **ids)
        torch.manual_seed(r.seed)
        return OPTForCausalLM(cfg)
    if r.arch == "mamba":
        mamba_scan.install()  # exact scan with a hand-written backward (no mamba-ssm on CPU)
        cfg = MambaConfig(vocab_size=len(tokenizer), hidden_size=r.hidden_size,
                          num_hidden_layers=r.num_layers, state_size=r.state_size,
                          expand=r.expand, conv_kernel=4, use_bias=False, use_conv_bias=True,
                          tie_word_embeddings=True, **ids)
        torch.manual_seed(r.seed)
        return MambaForCausalLM(cfg)
    raise ValueError(f"unsupported --arch {r.arch!r}; choose 'opt' or 'mamba'")


def train_chunks(ids: torch.Tensor, seqlen: int) -> torch.Tensor:
    n = ids.numel() // seqlen
    return ids[: n * seqlen].view(n, seqlen)  # [n_chunks, seqlen]


def lr_at(step: int, r: Recipe) -> float:
    if step < r.warmup_steps:
        return r.lr * (step + 1) / r.warmup_steps
    t = min(1.0, (step - r.warmup_steps) / max(1, r.steps - r.warmup_steps))
    return r.lr * (r.min_lr_ratio + (1 - r.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def heldout_ppl(model: torch.nn.Module, ids: torch.Tensor, seqlen: int, batch: int = 8) -> float:
    """exp(mean NLL) over non-overlapping `seqlen` windows of `ids` ([N])."""
    model.eval()
    windows = train_chunks(ids, seqlen)  # [W, seqlen]
    if windows.shape[0] == 0:
        raise ValueError(f"need at least {seqlen} evaluation tokens, got {ids.numel()}")
    nll, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        x = windows[i:i + batch]  # [b, seqlen]
        logits = model(input_ids=x).logits.float()  # [b, seqlen, V]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        nll, count = nll + loss.item(), count + x[:, 1:].numel()
    model.train()
    return math.exp(nll / count)


# ----------------------------------------------------------------------------- training
class Trainer:
    """One training run: model, optimiser, fixed-seed data order and resumable state."""

    def __init__(self, r: Recipe, tokenizer, chunks: torch.Tensor):
        self.r, self.chunks = r, chunks  # chunks: [C, seqlen]
        if chunks.shape[0] < r.batch_size:
            raise ValueError(f"corpus too small: {chunks.shape[0]} chunks < batch {r.batch_size}")
        self.model = build_model(r, tokenizer)
        self.fwd = torch.compile(self.model) if r.compile else self.model
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=r.lr, betas=(0.9, 0.95), eps=1e-8)
        self.gen = torch.Generator().manual_seed(r.seed)
        self.order = torch.randperm(chunks.shape[0], generator=self.gen)  # [C]
        self.state = {"step": 0, "cursor": 0, "epoch": 0, "elapsed": 0.0, "tokens": 0,
                      "loss_ema": None}

    def next_batch(self) -> torch.Tensor:
        st, b = self.state, self.r.batch_size
        if st["cursor"] + b > self.order.numel():  # new epoch, new fixed-seed permutation
            st["epoch"], st["cursor"] = st["epoch"] + 1, 0
            self.order = torch.randperm(self.chunks.shape[0], generator=self.gen)
        idx = self.order[st["cursor"]:st["cursor"] + b]  # [batch]
        st["cursor"] += b
        return self.chunks[idx]  # [batch, seqlen]

    def step(self) -> float:
        st = self.state
        for group in self.opt.param_groups:
            group["lr"] = lr_at(st["step"], self.r)
        x = self.next_batch()  # [batch, seqlen]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.r.bf16_autocast):
            loss = self.fwd(input_ids=x, labels=x).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.r.grad_clip)
        self.opt.step()
        value = loss.item()
        st["step"], st["tokens"] = st["step"] + 1, st["tokens"] + x.numel()
        st["loss_ema"] = value if st["loss_ema"] is None else 0.98 * st["loss_ema"] + 0.02 * value
        return value

    def save(self, path: Path) -> None:
        with outputs.replacing(path) as tmp:
            torch.save({"recipe": asdict(self.r), "model": self.model.state_dict(),
                        "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                        "order": self.order, "state": self.state}, tmp)

    def try_resume(self, path: Path) -> None:
        if not path.exists():
            return
        saved = torch.load(path, weights_only=False)
        # a different `steps` only changes the LR after warmup: resuming within warmup is exact
        same = {**saved["recipe"], "steps": self.r.steps} == asdict(self.r) and (
            saved["recipe"]["steps"] == self.r.steps
            or saved["state"]["step"] <= self.r.warmup_steps)
        if not same:
            log.warning("ignoring checkpoint %s: its recipe differs", path)
            return
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["opt"])
        self.gen.set_state(saved["gen"])
        self.order, self.state = saved["order"], saved["state"]
        log.info("resumed from %s at step %d", path, self.state["step"])


def probe_steps(r: Recipe, tokenizer, chunks: torch.Tensor, minutes: float) -> int:
    """Time a few steps (after compile warm-up) and size the run to `minutes` of wall time."""
    t = Trainer(r, tokenizer, chunks)
    t0 = time.time()
    for _ in range(3):
        t.step()
    warm = time.time() - t0
    t0 = time.time()
    for _ in range(10):
        t.step()
    per_step = (time.time() - t0) / 10
    steps = int((minutes * 60 - 2 * warm) * 0.95 / per_step)
    log.info("probe: %.2f s/step, %.0f tok/s, warm-up %.0f s -> %d steps", per_step,
             r.batch_size * r.seqlen / per_step, warm, steps)
    return max(r.warmup_steps + 1, steps)


def run(r: Recipe, out: Path, minutes: float, ckpt_dir: Path, ckpt_minutes: float = 5.0,
        eval_every: int = 500, command: str = "") -> dict:
    """Train per recipe `r` into `out` (resuming from ckpt_dir); return the model card."""
    from transformers import AutoTokenizer

    corpus = load_corpus(r.corpus)
    if (out / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(out))
        log.info("reusing tokenizer in %s (vocab %d)", out, len(tokenizer))
    else:
        tokenizer = train_tokenizer(corpus.text, r.vocab_size, out, max(r.seqlen, r.eval_seqlen))
    ids = tokenizer(corpus.text, add_special_tokens=False, verbose=False)["input_ids"]
    chunks = train_chunks(torch.tensor(ids, dtype=torch.long), r.seqlen)  # [C, seqlen]
    eval_ids = eval_token_ids(tokenizer, load_corpus(r.eval_corpus), r.eval_tokens)  # [E]
    log.info("corpus %s (%s): %d tokens, %d chunks of %d", r.corpus, corpus.sha256[:12],
             len(ids), chunks.shape[0], r.seqlen)
    if r.steps <= 0:
        r.steps = probe_steps(r, tokenizer, chunks, minutes)
    trainer = Trainer(r, tokenizer, chunks)
    ckpt = ckpt_dir / "ckpt.pt"
    trainer.try_resume(ckpt)
    st = trainer.state
    t0, last_ckpt = time.time() - st["elapsed"], time.time()
    bar = tqdm(range(st["step"], r.steps), desc="train", unit="step", mininterval=10)
    for i in bar:
        loss = trainer.step()
        st["elapsed"] = time.time() - t0
        bar.set_postfix(loss=f"{st['loss_ema']:.3f}", refresh=False)
        if (i + 1) % 100 == 0:
            log.info("step %d/%d loss %.4f ema %.4f lr %.2e epoch %d %.0f tok/s", i + 1, r.steps,
                     loss, st["loss_ema"], lr_at(i, r), st["epoch"], st["tokens"] / st["elapsed"])
        if eval_every and (i + 1) % eval_every == 0 and i + 1 < r.steps:
            log.info("step %d held-out %s ppl %.2f", i + 1, r.eval_corpus,
                     heldout_ppl(trainer.model, eval_ids, r.eval_seqlen))
        if time.time() - last_ckpt > ckpt_minutes * 60 and i + 1 < r.steps:
            trainer.save(ckpt)
            last_ckpt = time.time()
    model = trainer.model.to(torch.float16).to(torch.float32)  # evaluate the weights we ship
    ppl = heldout_ppl(model, eval_ids, r.eval_seqlen)
    log.info("final held-out %s ppl %.2f over %d tokens (fp16 weights)", r.eval_corpus, ppl,
             eval_ids.numel())
    card = _finish(r, out, model, corpus.sha256, st, ppl, eval_ids.numel(), len(tokenizer),
                   command)
    trainer.save(ckpt_dir / "final.pt")
    return card


def _finish(r: Recipe, out: Path, model, corpus_sha: str, st: dict, ppl: float, n_eval: int,
            vocab: int, command: str) -> dict:
    """Save fp16 safetensors + model_card.json into `out`; return the card."""
    import transformers

    n_params = sum(p.numel() for p in model.parameters())
    model.to(torch.float16).save_pretrained(str(out), safe_serialization=True)
    card = {"key": out.name, "trained_here": True,
            "recipe": {**asdict(r), "corpus_sha256": corpus_sha, "tokenizer_vocab": vocab,
                       "tokenizer": "byte-level BPE (tokenizers), trained on the same corpus",
                       "optimizer": "AdamW(betas=(0.9, 0.95), eps=1e-8), no decay on 1-D params",
                       "schedule": "linear warmup, then cosine to min_lr_ratio * lr",
                       "data_order": "non-overlapping seqlen chunks, torch.randperm per epoch",
                       "n_params": n_params},
            "tokens_seen": st["tokens"], "epochs_started": st["epoch"] + 1,
            "train_seconds": round(st["elapsed"], 1), "final_train_loss": st["loss_ema"],
            "heldout": {"corpus": r.eval_corpus, "seqlen": r.eval_seqlen, "n_tokens": n_eval,
                        "ppl": ppl, "note": "non-overlapping windows, fp16 weights, fp32 math"},
            "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                            "python": platform.python_version(),
                            "threads": torch.get_num_threads()},
            "command": command}
    outputs.replace_text(out / "model_card.json", json.dumps(card, indent=1) + "\n")
    return card


# what a (possibly interrupted) training run writes into --out
OUT_FILES = frozenset({"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                       "config.json", "generation_config.json", "model.safetensors",
                       "model_card.json"})


def check_out(out: Path) -> None:
    """Before any work: --out is a folder this tool trains into (new, empty, or holding only
    what a training run writes), its parent exists and it can be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PruneBenchError(f"--out {out} exists and is a file, not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUT_FILES)
        if foreign:
            raise PruneBenchError(f"--out {out} holds files a training run does not write "
                                  f"({', '.join(foreign[:3])}); refusing to train into it")
    elif not out.parent.is_dir():
        raise PruneBenchError(f"--out {out}: its folder {out.parent} does not exist")
    if not os.access(out if out.is_dir() else out.parent, os.W_OK):
        raise PruneBenchError(f"--out {out}: cannot write there (read-only or no permission)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="opt", choices=("opt", "mamba"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=60.0, help="wall budget used to size --steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--eval-every", type=int, default=500, help="steps between held-out evals")
    ap.add_argument("--tokenizer-only", action="store_true")
    for f, d in asdict(Recipe()).items():
        if isinstance(d, bool):
            ap.add_argument("--" + f.replace("_", "-"), action=argparse.BooleanOptionalAction,
                            default=d)
        elif f != "arch":
            ap.add_argument("--" + f.replace("_", "-"), type=type(d), default=d)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    check_out(a.out)
    torch.set_num_threads(a.threads)
    r = Recipe(**{f: getattr(a, f) for f in asdict(Recipe())})
    command = "python -m bench.train " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    if a.tokenizer_only:
        corpus = load_corpus(r.corpus)
        train_tokenizer(corpus.text, r.vocab_size, a.out, max(r.seqlen, r.eval_seqlen))
        return
    card = run(r, a.out, a.minutes, work_dir() / f"train-{a.out.name}", a.ckpt_minutes,
               a.eval_every, command=command)
    log.info("done: %s", json.dumps({k: card[k] for k in ("tokens_seen", "heldout")}))


if __name__ == "__main__":
    main()
