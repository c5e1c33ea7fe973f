"""What the study trains: the recipes, the candidate models, the shortcut-audit controls, and their order."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

RECIPES = {
    "plain": {},
    "crop-clahe": {"crop": 0.1, "equalize": "clahe"},
    "crop-hist": {"crop": 0.1, "equalize": "hist"},
    # training only: site-style augmentation (train.site) on top of crop + CLAHE; the device's input is unchanged
    "crop-clahe-site": {"crop": 0.1, "equalize": "clahe", "site-augment": 0.5},
}
# every candidate's schedule unless its recipe sets it, written out: the train CLI's own defaults are
# recipes/default.toml's (a pretrained Lite0 with a linear probe at 3e-4, site augmentation 0.5), not the study's
STUDY_SCHEDULE = {"head-epochs": 0, "lr": 1e-3, "site-augment": 0.0}
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
    recipe: str = "plain"  # a RECIPES key, or a recipe file (``*.toml``) that trains the candidate as it is
    keep: str = "all"
    image_size: int | None = None  # None: the study's --image-size

    @property
    def from_file(self) -> bool:
        return self.recipe.endswith(".toml")

    @property
    def label(self) -> str:
        alpha = f" {self.alpha}" if self.alpha else ""
        init = " (ImageNet)" if self.weights else (" (random init)" if self.model.startswith("efficientnet") else "")
        size = f" {self.image_size} px" if self.image_size else ""
        return f"{self.model}{alpha}{init}{size}"

    def train_args(self, epochs: int, qat_epochs: int, image_size: int | None = None) -> list[str]:
        """The train CLI's options for this experiment; ``image_size``: the study's (the experiment's own wins)."""
        if self.from_file:  # the recipe file as it is: its own model, size, schedule and harmonisation
            return ["--recipe", self.recipe]
        args = ["--model", self.model, "--epochs", str(epochs),
                "--qat-epochs", str(0 if self.keep != "all" else qat_epochs)]
        if self.alpha:
            args += ["--alpha", f"{self.alpha:g}"]
        args += ["--weights", self.weights or "none"]
        for k, v in (STUDY_SCHEDULE | RECIPES[self.recipe]).items():
            args += [f"--{k}", str(v)]
        if self.keep != "all":
            args += ["--keep", self.keep]
        if self.image_size or image_size:
            args += ["--image-size", str(self.image_size or image_size)]
        return args


def recipe_candidate(path: str | Path) -> Experiment:
    """A candidate trained by a recipe file as it is (``python -m train --recipe FILE``), named
    ``recipe-<file stem>``; model, width and weights are read from the file for its label (the train CLI's
    defaults where the file has none). The study adds only its seed and split."""
    from train.models import AUTO, resolve_start

    raw = tomllib.loads(Path(path).read_text())
    get = lambda k: raw.get(k, raw.get(k.replace("-", "_")))  # noqa: E731 - kebab or snake keys, as train accepts
    model = get("model") or "efficientnet_lite0"
    weights, _ = resolve_start(model, get("weights") or AUTO, 0)
    return Experiment(f"recipe-{Path(path).stem}", "model", model, get("alpha"), weights, str(path),
                      image_size=get("image-size"))


MODELS = [  # (short name, model, alpha, weights), in the order they train: the likeliest useful first
    ("mnv2-0.35", "mobilenet_v2", 0.35, None),
    ("lite0-imagenet", "efficientnet_lite0", None, "imagenet"),
    ("mnv3-small", "mobilenet_v3_small", None, None),
    ("mnv2-1.0", "mobilenet_v2", 1.0, None),
    ("mnv3-large", "mobilenet_v3_large", None, None),
    ("lite0-random", "efficientnet_lite0", None, None),
    ("lite1-imagenet", "efficientnet_lite1", None, "imagenet"),
    ("lite2-imagenet", "efficientnet_lite2", None, "imagenet"),
]
# candidates trained at their own input size (the resolution their ImageNet weights were trained at), not
# the study's --image-size, unless the study runs with --same-size
NATIVE_SIZES = {"lite1-imagenet": 240, "lite2-imagenet": 260}


def _full(recipe: str, role: str) -> Experiment:
    return Experiment(f"mnv2-0.35_{recipe}", role, "mobilenet_v2", 0.35, recipe=recipe)


def _control(recipe: str, keep: str) -> Experiment:
    return Experiment(f"control-{keep}_{recipe}", "control", "mobilenet_v2", 0.35, recipe=recipe, keep=keep)


def plan(recipe: str, recipes: list[str], models: list[str], controls=("border", "centre"),
         extra: tuple[str, ...] = (), recipe_files: tuple[str, ...] = (), native_sizes: bool = True
         ) -> list[Experiment]:
    """The experiments in the order they train: the chosen recipe's MobileNetV2 0.35 and its border-only
    control; the other recipes' pair; the lung-only (centre) control; the other candidates; the extra
    candidates (``model:recipe``); the recipe-file candidates; last the other recipes' centre controls. An
    interrupted study resumes where it stopped and has the key figures first. ``native_sizes``: the
    ``NATIVE_SIZES`` candidates train at their own size."""
    others = [r for r in recipes if r != recipe]
    border, centre = "border" in controls, "centre" in controls
    exps = [_full(recipe, "model")] + ([_control(recipe, "border")] if border else [])
    for r in others:
        exps += [_full(r, "recipe")] + ([_control(r, "border")] if border else [])
    if centre:
        exps.append(_control(recipe, "centre"))
    for short, model, alpha, weights in MODELS:
        if short in models and short != "mnv2-0.35":
            exps.append(Experiment(f"{short}_{recipe}", "model", model, alpha, weights, recipe,
                                   image_size=NATIVE_SIZES.get(short) if native_sizes else None))
    specs = {m[0]: m for m in MODELS}
    for item in extra:
        short, rec = item.split(":")
        name = f"{short}_{rec}"
        if name not in {e.name for e in exps}:
            _, model, alpha, weights = specs[short]
            exps.append(Experiment(name, "model", model, alpha, weights, rec,
                                   image_size=NATIVE_SIZES.get(short) if native_sizes else None))
    for path in recipe_files:
        exp = recipe_candidate(path)
        if exp.name in {e.name for e in exps}:
            raise ValueError(f"two candidates named {exp.name}: give the recipe files different names")
        exps.append(exp)
    if centre:
        exps += [_control(r, "centre") for r in others]
    return exps
