"""What the study trains: the recipes, the candidate models, the shortcut-audit controls, and their order."""
from __future__ import annotations

from dataclasses import dataclass

RECIPES = {
    "plain": {},
    "crop-clahe": {"crop": 0.1, "equalize": "clahe"},
    "crop-hist": {"crop": 0.1, "equalize": "hist"},
    # training only: site-style augmentation (train.site) on top of crop + CLAHE; the device's input is unchanged
    "crop-clahe-site": {"crop": 0.1, "equalize": "clahe", "site-augment": 0.5},
}
PREPROCESS_KEYS = ("crop", "equalize")  # the recipe keys that change what the device does to a film
DEFAULT_RECIPE = "crop-clahe"
# the ablation run by default; crop-hist on request (--recipes)
STUDY_RECIPES = ("crop-clahe", "plain", "crop-clahe-site")
# candidates trained with another recipe than --recipe as well (model:recipe), competing for the default
STUDY_EXTRA = ("mnv3-small:crop-clahe-site",)
DATA_DEFAULT = "../shared/data/cxr-dev"


@dataclass(frozen=True)
class Experiment:
    name: str
    role: str  # "model" (a candidate), "recipe" (the recipe ablation) or "control" (shortcut audit)
    model: str
    alpha: float | None = None
    weights: str | None = None
    recipe: str = "plain"
    keep: str = "all"

    @property
    def label(self) -> str:
        alpha = f" {self.alpha}" if self.alpha else ""
        init = " (ImageNet)" if self.weights else (" (random init)" if self.model.startswith("efficientnet") else "")
        return f"{self.model}{alpha}{init}"

    def train_args(self, epochs: int, qat_epochs: int) -> list[str]:
        args = ["--model", self.model, "--epochs", str(epochs),
                "--qat-epochs", str(0 if self.keep != "all" else qat_epochs)]
        if self.alpha:
            args += ["--alpha", f"{self.alpha:g}"]
        if self.weights:
            args += ["--weights", self.weights]
        for k, v in RECIPES[self.recipe].items():
            args += [f"--{k}", str(v)]
        if self.keep != "all":
            args += ["--keep", self.keep]
        return args


MODELS = [  # (short name, model, alpha, weights), in the order they train: the likeliest useful first
    ("mnv2-0.35", "mobilenet_v2", 0.35, None),
    ("lite0-imagenet", "efficientnet_lite0", None, "imagenet"),
    ("mnv3-small", "mobilenet_v3_small", None, None),
    ("mnv2-1.0", "mobilenet_v2", 1.0, None),
    ("mnv3-large", "mobilenet_v3_large", None, None),
    ("lite0-random", "efficientnet_lite0", None, None),
]


def _full(recipe: str, role: str) -> Experiment:
    return Experiment(f"mnv2-0.35_{recipe}", role, "mobilenet_v2", 0.35, recipe=recipe)


def _control(recipe: str, keep: str) -> Experiment:
    return Experiment(f"control-{keep}_{recipe}", "control", "mobilenet_v2", 0.35, recipe=recipe, keep=keep)


def plan(recipe: str, recipes: list[str], models: list[str], controls=("border", "centre"),
         extra: tuple[str, ...] = ()) -> list[Experiment]:
    """The experiments in the order they train: the chosen recipe's MobileNetV2 0.35 and its border-only
    control; the other recipes' pair; the lung-only (centre) control; the other candidates; the extra
    candidates (``model:recipe``); last the other recipes' centre controls. An interrupted study resumes where
    it stopped and has the key figures first."""
    others = [r for r in recipes if r != recipe]
    border, centre = "border" in controls, "centre" in controls
    exps = [_full(recipe, "model")] + ([_control(recipe, "border")] if border else [])
    for r in others:
        exps += [_full(r, "recipe")] + ([_control(r, "border")] if border else [])
    if centre:
        exps.append(_control(recipe, "centre"))
    for short, model, alpha, weights in MODELS:
        if short in models and short != "mnv2-0.35":
            exps.append(Experiment(f"{short}_{recipe}", "model", model, alpha, weights, recipe))
    specs = {m[0]: m for m in MODELS}
    for item in extra:
        short, rec = item.split(":")
        name = f"{short}_{rec}"
        if name not in {e.name for e in exps}:
            _, model, alpha, weights = specs[short]
            exps.append(Experiment(name, "model", model, alpha, weights, rec))
    if centre:
        exps += [_control(r, "centre") for r in others]
    return exps
