"""A synthetic ledger that follows known laws, so transfer, regimes and the report are tested end to end.

Scratch loss: L_s(N, D) = E + A / N^alpha + B / D^beta (nats per token, D in tokens). Fine-tuned loss:
L_ft(N, D_F) = L_s(N, D_F + D_T) with D_T = k D_F^t_alpha N^t_beta, i.e. the transfer law holds exactly, so
the analysis must find it again. Two learning rates per cell (the worse one 3% higher), two languages with
different tokens per character, pre-training rows with curves, an extra English validation loss for the
fine-tuned runs (forgetting), and a few failed runs that the analysis must ignore.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SIZES = {"xs": 2.0e5, "s": 8.0e5, "m": 3.2e6}
D_FS = [1e4, 1e5, 1e6, 1e7, 1e8]
LRS = [1e-3, 3e-3]  # the second is 3% worse everywhere


@dataclass
class Truth:
    e: float = 1.6
    a: float = 60.0
    alpha: float = 0.3
    b: float = 45.0
    beta: float = 0.3
    # language -> (k, alpha, beta) of D_T = k D_F^alpha N^beta, D in tokens
    transfer: dict[str, tuple[float, float, float]] = field(
        default_factory=lambda: {"de": (3000.0, 0.2, 0.3), "zh": (300.0, 0.2, 0.3)}
    )
    chars_per_token: dict[str, float] = field(default_factory=lambda: {"de": 4.0, "zh": 1.5})

    def scratch(self, n: float, d: float) -> float:
        return self.e + self.a / n**self.alpha + self.b / d**self.beta

    def d_t(self, lang: str, n: float, d_f: float) -> float:
        k, ta, tb = self.transfer[lang]
        return k * d_f**ta * n**tb

    def finetune(self, lang: str, n: float, d_f: float) -> float:
        return self.scratch(n, d_f + self.d_t(lang, n, d_f))


def _curve(final: float, tokens: float, still_falling: bool) -> str:
    steps = np.linspace(0.1, 1.0, 8)
    # Falling to the best loss, then flat (converged) or still falling at the end (budget-limited).
    loss = final * (1 + (0.3 if still_falling else 0.3 * (1 - steps) ** 3) * (1 - steps))
    if not still_falling:
        loss[-3:] = final
    return json.dumps(
        [
            {"tokens": float(t * tokens), "step": i, "val_loss": float(v)}
            for i, (t, v) in enumerate(zip(steps, loss, strict=True))
        ]
    )


def make_ledger(lang: str, truth: Truth | None = None, noise: float = 0.002, seed: int = 0) -> pd.DataFrame:
    """One language's sweep: scratch and finetune cells for 3 sizes x 5 D_F x 2 LRs, plus pre-training."""
    truth = truth or Truth()
    rng = np.random.default_rng(seed)
    cpt = truth.chars_per_token[lang]
    sweep = {"de": "german", "zh": "chinese"}.get(lang, lang)
    rows = []
    for size, n in SIZES.items():
        for d_f in D_FS:
            for init in ("scratch", "finetune"):
                base = truth.scratch(n, d_f) if init == "scratch" else truth.finetune(lang, n, d_f)
                for i, lr in enumerate(LRS):
                    loss = base * (1.03 if i else 1.0) * math.exp(rng.normal(0, noise))
                    tokens = min(20 * d_f, 2e8)
                    budget = init == "scratch" and d_f >= 1e7  # big scratch sets hit the token cap
                    rows.append(
                        {
                            "trial_key": f"{lang}-{size}-{d_f:g}-{init}-{lr:g}",
                            "sweep_key": "sk",
                            "sweep": sweep,
                            "stage": "transfer",
                            "language": lang,
                            "init": init,
                            "size": size,
                            "n_layer": 2,
                            "d_model": 64,
                            "n_params": int(n),
                            "n_params_estimate": int(n),
                            "d_f": int(d_f),
                            "d_f_chars": int(d_f * cpt),
                            "lr": lr,
                            "schedule_kind": "cosine",
                            "warmup_steps": 10,
                            "decay_floor": 0.1,
                            "seed": 0,
                            "status": "FINISHED",
                            "failure_reason": "",
                            "best_val_loss": loss,
                            "val_tokens_per_char": 1.0 / cpt,
                            "best_val_bpc": loss / cpt / math.log(2),
                            "tokens_at_best": int(tokens if budget else 0.6 * tokens),
                            "tokens_seen": int(tokens),
                            "steps": 100,
                            "flops": 6.0 * n * tokens,
                            "stop_reason": "budget" if budget else "overfit",
                            "zero_shot_loss": truth.scratch(n, 1e3) + 1.0 if init == "finetune" else math.nan,
                            "extra_val_loss_en": 3.0 + 0.1 * math.log10(d_f)
                            if init == "finetune"
                            else math.nan,
                            "zero_shot_extra_val_loss_en": 3.0 if init == "finetune" else math.nan,
                            "wall_s": 1.0,
                            "tokens_per_s": 1e5,
                            "curve": _curve(loss, tokens, still_falling=budget),
                        }
                    )
    rows.append(
        {
            **rows[0],
            "trial_key": "failed",
            "status": "FAILED",
            "failure_reason": "oom",
            "best_val_loss": math.nan,
        }
    )
    for size, n in SIZES.items():
        rows.append(
            {
                **rows[0],
                "trial_key": f"pre-{size}",
                "stage": "pretrain",
                "language": "en",
                "init": "scratch",
                "size": size,
                "n_params": int(n),
                "d_f": int(1e9),
                "best_val_loss": truth.scratch(n, 1e9),
                "curve": _curve(truth.scratch(n, 1e9), 1e9, still_falling=False),
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def truth() -> Truth:
    return Truth()


@pytest.fixture(scope="session")
def ledger_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """results/german/trials.parquet and results/chinese/trials.csv (both formats are accepted)."""
    root = tmp_path_factory.mktemp("results")
    de, zh = root / "german", root / "chinese"
    de.mkdir()
    zh.mkdir()
    make_ledger("de", seed=1).to_parquet(de / "trials.parquet")
    make_ledger("zh", seed=2).to_csv(zh / "trials.csv", index=False)
    return [de, zh]
