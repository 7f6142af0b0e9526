"""Typed, validated configuration for each stage. Invalid values fail when the config is built,
with a message naming the field, never deep inside a run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import ConfigError

BIG = 10 ** 9


def option(default, help: str, *, flag: str | None = None, choices=None, range=None, metavar: str | None = None,
           const=None):
    """A config field that is also a command-line option: its default, help, choices and range
    (low, high[, "above" | "open"]: numbers must exceed low / lie strictly inside), read by
    edgecls.cli to build the option (its flag: `--field-name` unless given). A bool field is a
    switch: `--flag` sets True, or, where the default is True, sets it False. `const`: the value of
    the flag given without one."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "range": range,
                                            "metavar": metavar, "const": const})

def _need(cond, msg) -> None:
    """A config's check: ConfigError(msg) unless cond."""
    if not cond:
        raise ConfigError(msg)


# What tune optimizes and how it counts a file's size (edgecls.selection reads them from here: a
# config never depends on a later pipeline stage).
OBJECTIVES = ("latency", "size", "accuracy")
SIZE_MEASURES = ("file", "gzip")

RECIPES = ("edgecls", "tutorial")
FINE_TUNE_MODES = ("auto", "always", "never")  # when tune tries pruning and QAT candidates
# Where a remote bench puts bundles on a device, relative to its home (edgecls.bench.remote).
DEFAULT_REMOTE_DIR = ".cache/edgecls/remote"

# Test-time augmentations (edgecls.runtime.with_tta).
TTA_MODES = ("flip",)


def check_tta(tta) -> str | None:
    """None (one pass per image) or a test-time augmentation in TTA_MODES; anything else is a ConfigError."""
    if tta is not None and tta not in TTA_MODES:
        raise ConfigError(f"unknown test-time augmentation {tta!r}; choose from {', '.join(TTA_MODES)} (or none)")
    return tta

# What the report's recommendation minimizes among the variants within its accuracy rule.
REPORT_OBJECTIVES = ("latency", "size")


@dataclass(frozen=True)
class ReportConfig:
    """The report's recommendation, per device: the fastest (`objective` "latency") or smallest
    ("size") variant within `max_drop` points of top-1 of the most accurate float variant measured
    on that device."""

    max_drop: float = option(1.0, "the recommendation's rule: points of top-1 a variant may lose against the most "
                                  "accurate float variant on its device", range=(0, 100), metavar="POINTS")
    objective: str = option("latency", "what the recommendation minimizes within that rule", choices=REPORT_OBJECTIVES)

    def __post_init__(self):
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) or not 0 <= self.max_drop <= 100:
            raise ConfigError(f"max_drop must be between 0 and 100 points, got {self.max_drop!r}")
        if self.objective not in REPORT_OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(REPORT_OBJECTIVES)}, got {self.objective!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Training stage options.

    recipe "edgecls": SGD with Nesterov momentum, linear warm-up then cosine decay, decoupled weight
    decay (not on BatchNorm or biases), label smoothing, padded-crop + flip augmentation (plus cutout of a
    `cutout` x `cutout` square when cutout > 0, and CutMix of a batch with probability `cutmix` when
    cutmix > 0), inputs
    standardized with the training set's per-channel mean and std.
    recipe "tutorial": the Keras CIFAR-10 tutorial's plain recipe (Adam 1e-3, no augmentation, no
    label smoothing, pixels / 255), kept as a baseline to compare against.

    swa_epochs > 0 ends an "edgecls" run with stochastic weight averaging: the cosine decay reaches
    `swa_lr` that many epochs before the end, the rate then stays there, the weights at the end of
    each of those epochs are averaged, and BatchNorm statistics are recomputed for the average.

    teacher (a finished "edgecls train" directory with the same classes and image size) adds
    knowledge distillation: the loss becomes (1 - distill_alpha) * the labels' loss + distill_alpha *
    T^2 * KL(teacher_T || student_T) at temperature T = distill_temperature. The teacher sees each
    augmented batch through its own preprocessing. distill_temperature None (the default) chooses T
    from the teacher's own training: 1 for a teacher trained with label smoothing (as this recipe
    trains), 4 otherwise. Label smoothing flattens the teacher's non-target probabilities and a high
    T flattens them further, so little of what sets the classes apart reaches the student
    (Chandrasegaran et al., ICML 2022: distil LS-trained teachers at a low temperature).
    """

    data: str = option("cifar10-sample", "image folder, .zip of one, cifar-10-batches-py folder, 'cifar10' or "
                                         "'cifar10-sample'")
    arch: str = option("resnet8", "zoo model name (see 'edgecls zoo')")
    out: str = "runs/train"
    epochs: int = option(30, "training epochs", range=(1, 100_000))
    batch_size: int = option(128, "training batch size", range=(1, 65_536))
    recipe: str = option("edgecls", "'edgecls' (augmented SGD+cosine) or 'tutorial' (plain Adam baseline)", choices=RECIPES)
    learning_rate: float | None = option(None, "peak learning rate (default 0.1 x batch/128 for SGD)", flag="--lr",
                                         range=(0, 1e6, "above"))
    weight_decay: float = option(5e-4, "decoupled weight decay (not on BatchNorm or biases)", range=(0, 1))
    momentum: float = 0.9
    label_smoothing: float = option(0.1, "label smoothing of the training loss", range=(0, 0.99))
    warmup_epochs: float = 2.0
    augment: bool = option(True, "turn off crop/flip augmentation", flag="--no-augment")
    cutout: int = option(0, "also blank one random N x N square of each training image (cutout; 0: off)",
                         metavar="N", range=(0, 2048))
    cutmix: float = option(0.0, "CutMix: with probability P per batch, paste a random box from another image of the batch "
                                "into each image and mix the labels by its area (0: off; the paper's CIFAR "
                                "setting is 0.5)", metavar="P", range=(0, 1))
    val_fraction: float = option(0.1, "share of training images held out for validation", range=(0, 0.9))
    patience: int = option(15, "early-stopping patience in epochs (0: off)", range=(0, 100_000))
    image_size: int = option(32, "input height and width in pixels", range=(8, 2048))
    seed: int = option(0, "seed of the split, the initial weights and the augmentation", range=(0, 2 ** 32 - 1))
    resume: bool = option(False, "continue an interrupted run from its last checkpoint")
    init_from: str | None = option(None, "start from the weights of a finished 'edgecls train' run (same arch and "
                                         "classes) with a new learning-rate cycle; its preprocessing is kept",
                                   flag="--init", metavar="TRAINED_DIR")
    swa_epochs: int = option(0, "stochastic weight averaging: train the last N epochs at a constant rate, average their "
                                "weights, recompute BatchNorm statistics (default 0: off; early stopping is off with it)",
                             metavar="N", range=(0, 10_000))
    swa_learning_rate: float | None = option(None, "learning rate of the averaging epochs (default: half the peak --lr)",
                                             flag="--swa-lr", range=(0, 10, "above"))
    teacher: str | None = option(None, "knowledge distillation: also learn the soft outputs of this finished 'edgecls "
                                       "train' run (same classes and image size; usually a larger model, e.g. "
                                       "resnet20); slower per epoch", metavar="TRAINED_DIR")
    distill_alpha: float = option(0.9, "weight of the teacher's term in the loss", range=(0, 1))
    distill_temperature: float | None = option(None, "softmax temperature of distillation (default: 1 for a teacher "
                                                     "trained with label smoothing, as edgecls's recipe trains, else 4)",
                                               range=(0, 1000, "above"))
    verbose: int | None = option(None, "Keras progress: 0 silent, 1 bar, 2 line per epoch (default: 1 on a terminal, 2 otherwise)",
                                 choices=(0, 1, 2))
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        _need(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs!r}")
        _need(isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch_size must be a positive integer, got {self.batch_size!r}")
        _need(self.recipe in RECIPES, f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        _need(self.learning_rate is None or self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}")
        _need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        _need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _need(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        _need(0 <= self.val_fraction < 0.5, f"val_fraction must be in [0, 0.5), got {self.val_fraction}")
        _need(isinstance(self.patience, int) and self.patience >= 0, f"patience must be an integer >= 0 (0 disables early stopping), got {self.patience!r}")
        _need(isinstance(self.image_size, int) and 8 <= self.image_size <= 1024, f"image_size must be an integer in 8..1024, got {self.image_size!r}")
        _need(self.verbose in (None, 0, 1, 2), f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        _need(bool(str(self.out).strip()), "out must name a directory")
        _need(isinstance(self.swa_epochs, int) and 0 <= self.swa_epochs, f"swa_epochs must be an integer >= 0, got {self.swa_epochs!r}")
        if self.swa_epochs:
            _need(self.recipe != "tutorial", "weight averaging (swa_epochs) belongs to the 'edgecls' recipe, not 'tutorial'")
            _need(2 <= self.swa_epochs < self.epochs,
                 f"swa_epochs must be at least 2 and less than epochs ({self.epochs}) so some epochs come before the averaging; got {self.swa_epochs}")
        _need(self.swa_learning_rate is None or self.swa_learning_rate > 0, f"swa_learning_rate must be positive, got {self.swa_learning_rate}")
        _need(isinstance(self.cutout, int) and 0 <= self.cutout < self.image_size,
             f"cutout must be an integer from 0 (off) to less than image_size ({self.image_size}), got {self.cutout!r}")
        if self.cutout:
            _need(self.augment and self.recipe != "tutorial", "cutout is augmentation: it needs augment on and the 'edgecls' recipe")
        _need(isinstance(self.cutmix, (int, float)) and not isinstance(self.cutmix, bool) and 0 <= self.cutmix <= 1,
             f"cutmix is the probability that a batch is mixed, from 0 (off) to 1, got {self.cutmix!r}")
        if self.cutmix:
            _need(self.augment and self.recipe != "tutorial", "cutmix is augmentation: it needs augment on and the 'edgecls' recipe")
        _need(0 <= self.distill_alpha <= 1, f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        _need(self.distill_temperature is None or self.distill_temperature > 0,
             f"distill_temperature must be positive, got {self.distill_temperature}")
        if self.teacher is not None:
            _need(bool(str(self.teacher).strip()), "teacher must name a finished 'edgecls train' directory")
            _need(self.recipe != "tutorial", "a teacher (distillation) belongs to the 'edgecls' recipe, not 'tutorial'")

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        # SGD: the architecture's rate for batch 128 (0.1 for networks with BatchNorm), scaled
        # linearly with the batch size.
        if self.recipe == "tutorial":
            return 1e-3
        from .errors import ModelError
        from .zoo import get_model_info

        try:
            base = get_model_info(self.arch).sgd_lr
        except ModelError:
            base = 0.1
        return base * self.batch_size / 128

    @property
    def swa_lr(self) -> float:
        """The constant learning rate of the averaging epochs: half the peak unless given, as in the
        SWA paper's CIFAR runs (0.05 after a peak of 0.1)."""
        return self.swa_learning_rate if self.swa_learning_rate is not None else self.peak_learning_rate / 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["peak_learning_rate"] = self.peak_learning_rate
        if self.swa_epochs:
            d["swa_lr"] = self.swa_lr
        return d


ONNX_INT8_METHODS = ("ort_qdq", "tflite")
# onnxruntime QDQ schemes (edgecls.export.formats.onnx.INT8_SCHEMES says what each one is).
ONNX_INT8_SCHEMES = ("u8s8_rr", "u8u8", "s8s8")
# How pruning spreads the target sparsity over the layers (edgecls.optimize.prune).
SPARSITY_ALLOCATIONS = ("uniform", "lamp")
# Weight scales of int8 post-training quantization: one per output channel (default, accurate) or
# one per tensor (smaller file: no per-channel scale and zero-point arrays).
INT8_WEIGHT_SCALES = ("per-channel", "per-tensor")
# Fewer images than this do not pin down activation ranges; int8 accuracy then depends on luck.
MIN_CALIBRATION = 32


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning (edgecls.optimize.prune), fine-tuned with `FineTuneConfig`."""

    sparsity: float = option(0.5, "pruning target sparsity in (0, 1)", range=(0, 1, "open"))
    allocation: str = option("uniform", "'uniform': every pruned layer to --sparsity; 'lamp': per-layer sparsities "
                                         "from layer-adaptive magnitude scores of the trained weights (large layers lose "
                                         "more, small ones less), the pruned layers together at --sparsity",
                             flag="--sparsity-allocation", choices=SPARSITY_ALLOCATIONS)
    structured_2x4: bool = option(False, "2:4 structured sparsity instead of unstructured")
    skip_layers: tuple[str, ...] = option((), "layers to leave unpruned")
    epochs: int = option(2, "fine-tuning epochs while pruning", flag="--prune-epochs", range=(1, 10_000))
    learning_rate: float = option(0.01, "peak learning rate of the pruning fine-tune (cosine decay)", flag="--prune-lr",
                                  range=(0, 10, "above"))

    def __post_init__(self):
        object.__setattr__(self, "skip_layers", tuple(self.skip_layers))
        _need(isinstance(self.sparsity, (int, float)) and 0.0 < self.sparsity < 1.0,
              f"sparsity must be between 0 and 1 (exclusive), got {self.sparsity}")
        _need(self.allocation in SPARSITY_ALLOCATIONS,
              f"sparsity_allocation must be one of {', '.join(SPARSITY_ALLOCATIONS)}, got {self.allocation!r}")
        _need(not (self.structured_2x4 and self.allocation != "uniform"),
              "2:4 structured sparsity is 50% in every layer; drop --sparsity-allocation or --structured-2x4")
        _need(isinstance(self.epochs, int) and self.epochs >= 1, f"prune_epochs must be >= 1, got {self.epochs!r}")
        _need(self.learning_rate > 0, f"prune_learning_rate must be positive, got {self.learning_rate}")


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware training (edgecls.optimize.qat), fine-tuned with `FineTuneConfig`."""

    epochs: int = option(1, "quantization-aware fine-tuning epochs", flag="--qat-epochs", range=(1, 10_000))
    learning_rate: float = option(0.005, "peak learning rate of the QAT fine-tune (cosine decay)", flag="--qat-lr",
                                  range=(0, 10, "above"))
    # Start QAT's activation ranges from the representative images.
    calibrate: bool = option(True, "start QAT from tfmot's initial activation ranges [-6, 6] instead of ranges "
                                   "calibrated on the representative images (for comparison)",
                             flag="--no-qat-calibration")

    def __post_init__(self):
        _need(isinstance(self.epochs, int) and self.epochs >= 1, f"qat_epochs must be >= 1, got {self.epochs!r}")
        _need(self.learning_rate > 0, f"qat_learning_rate must be positive, got {self.learning_rate}")


@dataclass(frozen=True)
class FineTuneConfig:
    """What pruning and QAT fine-tunes share, and how far a fine-tuned variant may fall."""

    batch_size: int = option(128, "fine-tuning batch size", range=(1, 65_536))
    distill: bool = option(False, "pruning and QAT fine-tunes also learn the original model's softened outputs "
                                  "(knowledge distillation from the uncompressed model; slower per epoch, recovers "
                                  "more accuracy)")
    distill_alpha: float = option(0.9, "weight of the distillation term", range=(0, 1, "above"))
    distill_temperature: float = option(4.0, "softmax temperature of distillation", range=(0, 1000, "above"))
    # Points a fine-tuned variant (pruned, QAT) may lose against the model the user gave, on the
    # held-out images, before it fails (ValidationConfig.max_drop, when given, is the budget instead).
    max_drop: float = option(5.0, "top-1 points a pruned or QAT variant may lose against the model you gave, on the "
                                  "held-out images, before it fails (--max-drop, when given, instead)",
                             flag="--fine-tuned-max-drop", range=(0, 100), metavar="POINTS")

    def __post_init__(self):
        _need(isinstance(self.batch_size, int) and self.batch_size >= 1,
              f"fine_tune_batch_size must be >= 1, got {self.batch_size!r}")
        _need(0.0 < self.distill_alpha <= 1.0, f"distill_alpha must be in (0, 1], got {self.distill_alpha}")
        _need(self.distill_temperature > 0, f"distill_temperature must be positive, got {self.distill_temperature}")
        _need(isinstance(self.max_drop, (int, float)) and 0 <= self.max_drop <= 100,
              f"fine_tuned_max_drop must be between 0 and 100 points, got {self.max_drop!r}")


@dataclass(frozen=True)
class CalibrationConfig:
    """The representative images of int8 quantization (edgecls.export.calibration)."""

    count: int = option(300, "representative training images for int8", flag="--calibration-count", range=(1, BIG))
    seed: int = option(0, "which training images are drawn", flag="--calibration-seed", range=(0, 2 ** 32 - 1))
    # Unlabelled images for int8 calibration (None: --data's training split).
    data: str | None = option(None, "unlabelled images (a folder or .zip, class folders or none) to calibrate int8 on "
                                    "instead of --data's training split; --data's labels are then used only to measure "
                                    "accuracy", flag="--calibration-data", metavar="PATH")
    # Calibration sizes to choose from on the validation split.
    search: tuple[int, ...] = option((), "choose each int8 variant's calibration size among these (e.g. 100,300,1000), "
                                         "drawing each --calibration-draws times, by closeness to the float model's "
                                         "outputs on a validation split of the training data; the spread of each size "
                                         "is recorded", flag="--calibration-search", metavar="N,N,...", range=(1, BIG))
    draws: int = option(3, "random draws per size for --calibration-search", flag="--calibration-draws", range=(1, 100))

    def __post_init__(self):
        object.__setattr__(self, "search", tuple(self.search))
        _need(isinstance(self.count, int) and self.count >= MIN_CALIBRATION,
              f"calibration_count must be at least {MIN_CALIBRATION} real training images, got {self.count!r}")
        _need(all(isinstance(c, int) and c >= MIN_CALIBRATION for c in self.search),
              f"calibration_search sizes must be at least {MIN_CALIBRATION} images each, got {self.search!r}")
        _need(isinstance(self.draws, int) and 1 <= self.draws <= 20,
              f"calibration_draws must be between 1 and 20, got {self.draws!r}")
        _need(not (self.search and self.data),
              "calibration_search draws from the training split; drop calibration_data (--calibration-data) or the search")


@dataclass(frozen=True)
class ConvertConfig:
    """How the TFLite and ONNX files are written (edgecls.export.formats)."""

    float_io: bool = option(False, "int8 TFLite models take and return float32 instead of int8")
    int8_weights: str = option("per-channel", "weight scales of int8 PTQ TFLite models: per-channel (accurate) or "
                                              "per-tensor (smaller file; check the accuracy it reports)",
                               choices=INT8_WEIGHT_SCALES)
    strip_names: bool = option(False, "drop tensor names and signatures from TFLite files (smaller; the runtime does "
                                      "not need them)")
    onnx_opset: int = option(17, "ONNX opset", flag="--opset", range=(13, 21))
    onnx_int8_method: str = option("ort_qdq", "ONNX int8 route: onnxruntime static QDQ (ort_qdq) or tf2onnx from the "
                                              "int8 TFLite (tflite)", flag="--onnx-int8", choices=ONNX_INT8_METHODS)
    onnx_int8_scheme: str = option("u8s8_rr", "ONNX QDQ types: u8s8_rr (uint8 activations, 7-bit weights, the same "
                                              "outputs on every CPU), u8u8 (exact everywhere, fp32 speed on x86), s8s8 "
                                              "(exact only on x86 with VNNI and on arm64)", choices=ONNX_INT8_SCHEMES)
    nchw: bool = option(False, "ONNX models take NCHW input")

    def __post_init__(self):
        _need(self.int8_weights in INT8_WEIGHT_SCALES,
              f"int8_weights must be one of {', '.join(INT8_WEIGHT_SCALES)}, got {self.int8_weights!r}")
        _need(self.onnx_int8_method in ONNX_INT8_METHODS,
              f"onnx_int8_method must be one of {', '.join(ONNX_INT8_METHODS)}, got {self.onnx_int8_method!r}")
        _need(self.onnx_int8_scheme in ONNX_INT8_SCHEMES,
              f"onnx_int8_scheme must be one of {', '.join(ONNX_INT8_SCHEMES)}, got {self.onnx_int8_scheme!r}")
        _need(isinstance(self.onnx_opset, int) and 13 <= self.onnx_opset <= 21, f"onnx_opset must be in 13..21, got {self.onnx_opset!r}")


@dataclass(frozen=True)
class ValidationConfig:
    """How each file is judged against the source (edgecls.export.validate), diagnosed
    (edgecls.export.diagnose) and repaired (edgecls.export.repair)."""

    max_images: int | None = option(None, "validate on at most this many held-out images (default: all)",
                                    flag="--max-eval-images", range=(1, BIG))
    timeout_s: float = 600.0  # a converted file whose validation runs longer is a failed row (hung)
    diagnose: bool = True  # per-layer error of each post-training quantized variant
    max_drop: float | None = option(None, "accuracy budget of int8 variants against the model you gave, in points, on a "
                                          "validation split of the training data: a variant that misses it keeps its "
                                          "worst layers (per-layer diagnosis) in float one at a time until it meets it, "
                                          "or fails saying by how much", range=(0, 100), metavar="POINTS")
    repair_images: int = option(2000, "training images (not calibration ones) that --max-drop and --calibration-search "
                                      "are judged on", range=(1, BIG))
    repair_max_layers: int = 8  # layers kept in float at most before the budget counts as missed
    tolerances: dict = field(default_factory=dict, compare=False)  # per precision (edgecls.export.validate.TOLERANCES)

    def __post_init__(self):
        _need(self.max_images is None or (isinstance(self.max_images, int) and self.max_images >= 1),
              f"max_eval_images must be a positive integer, got {self.max_images!r}")
        _need(self.max_drop is None or (isinstance(self.max_drop, (int, float)) and 0 <= self.max_drop < 100),
              f"max_drop must be a number of accuracy points between 0 and 100, got {self.max_drop!r}")
        _need(isinstance(self.repair_images, int) and self.repair_images >= 50,
              f"repair_images must be at least 50, got {self.repair_images!r}")
        _need(isinstance(self.repair_max_layers, int) and self.repair_max_layers >= 1,
              f"repair_max_layers must be at least 1, got {self.repair_max_layers!r}")


@dataclass(frozen=True)
class MicroConfig:
    """Microcontroller checks of full-integer TFLite files (edgecls.micro)."""

    enabled: bool = option(False, "microcontroller target: run every full-integer TFLite variant under TensorFlow Lite "
                                  "Micro's kernels, record its verdict (ops TFLM lacks), exact tensor arena, flash and "
                                  "RAM, its accuracy and agreement there, and write C sources (model array, header, op "
                                  "resolver) into micro/", flag="--micro")
    images: int = option(1000, "held-out images run under TFLite Micro per variant", flag="--micro-images", range=(1, BIG))

    def __post_init__(self):
        _need(isinstance(self.images, int) and self.images >= 1, f"micro_images must be a positive integer, got {self.images!r}")


@dataclass(frozen=True)
class ExportConfig:
    """Optimization and export options (see `edgecls export --help`), one section per stage.

    formats: variant names or groups ("default", "all", "engines", "tflite", "onnx", "int8"); see
    edgecls.export.VARIANTS and GROUPS.
    """

    formats: tuple[str, ...] = option(("default",), "variants or groups: default (what a bundle ships: every "
                                                     "optimization, one int8 engine per format), engines (every "
                                                     "post-training quantization engine side by side), all, tflite, "
                                                     "onnx, int8, float")
    # An `edgecls optimize` folder whose pruned/QAT models export reuses.
    optimized: str | None = option(None, "reuse the pruned and QAT models 'edgecls optimize' wrote in DIR (from the same "
                                         "MODEL) instead of fine-tuning again", metavar="DIR")
    prune: PruneConfig = PruneConfig()
    qat: QATConfig = QATConfig()
    fine_tune: FineTuneConfig = FineTuneConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    convert: ConvertConfig = ConvertConfig()
    validation: ValidationConfig = ValidationConfig()
    micro: MicroConfig = MicroConfig()
    isolate: bool = True  # export in a worker process restarted after a native crash (edgecls.export.worker)
    seed: int = option(0, "seed of every random draw and fine-tune", range=(0, 2 ** 32 - 1))
    verbose: int = option(0, "Keras progress while fine-tuning: 0 silent, 1 bar, 2 line per epoch", choices=(0, 1, 2))

    SECTIONS = ("prune", "qat", "fine_tune", "calibration", "convert", "validation", "micro")

    def __post_init__(self):
        object.__setattr__(self, "formats", tuple(self.formats))
        _need(self.formats, "formats must name at least one variant")
        for name in self.SECTIONS:
            kind = type(getattr(ExportConfig, name))
            _need(isinstance(getattr(self, name), kind), f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")

    def to_dict(self) -> dict:
        """JSON-ready: tuples as lists, one object per section."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "ExportConfig":
        sections = {name: type(getattr(cls, name))(**d[name]) for name in cls.SECTIONS if name in d}
        return cls(**{**{k: v for k, v in d.items() if k not in cls.SECTIONS}, **sections})


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class BenchConfig:
    variants: tuple[str, ...] = option((), "variants to run (default: all validated)")
    threads: int | None = option(1, "inference threads", range=(1, 1024))
    warmup: int = option(20, "untimed calls before the timed ones", range=(0, BIG))
    runs: int = option(40, "timed batch-1 calls per variant", range=(1, BIG))
    batch: int = option(32, "batch size for the throughput measurement", range=(1, 65_536))
    max_images: int | None = option(None, "use at most this many labelled images", range=(1, BIG))
    # A Keras model file to measure beside the exported variants (needs TensorFlow), so the table
    # shows what leaving TensorFlow buys. Its row is named "keras_fp32"; "auto": the bundle's model.keras.
    keras: str | None = option(None, "also measure the Keras fp32 model (row keras_fp32; needs TensorFlow): the bundle's "
                                     "model.keras, or the file given", metavar="MODEL", const="auto")
    # Test-time augmentation (edgecls.runtime.TTA_MODES): "flip" averages each image with its mirror
    # image, in every row, the Keras one too: latency, throughput and accuracy then include it.
    tta: str | None = option(None, "test-time augmentation in every row: 'flip' averages each image with its mirror "
                                   "image (twice the inference per image)", choices=TTA_MODES)
    # Each variant is measured in `repeats` fresh processes, the variants taking turns (round-robin),
    # so slow drift of a shared host lands on every variant alike. Accuracy is measured in the first
    # round only; latency and throughput are the median round's, and every round's p50 and
    # throughput are kept (row "repeats") so the spread between processes is on record. Five give
    # each p50 an interval the report's recommendation and front rely on: two equally fast files
    # separate completely by chance 2 times in 252 (edgecls.selection.faster_beyond_noise). The
    # Keras row, a reference far slower than any exported file, is measured in the first round only.
    repeats: int = option(5, "measure each variant in N fresh processes, the variants taking turns; report the "
                             "median round's latency and every round's p50", metavar="N", range=(1, 1000))

    def __post_init__(self):
        check_tta(self.tta)
        for name in ("warmup", "runs", "batch", "repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "warmup" else 1):
                raise ConfigError(f"{name} must be a {'non-negative' if name == 'warmup' else 'positive'} integer, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be a positive integer, got {self.threads!r}")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"max_images must be positive, got {self.max_images!r}")


# The post-training variants `edgecls tune` searches (edgecls.tune.PTQ_STAGES builds them).
TUNE_VARIANTS = ("tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_dynamic_aeq", "tflite_int8", "tflite_int8_pixels",
                 "tflite_int8_aeq",
                 "tflite_int16x8_aeq", "onnx_fp32", "onnx_int8", "onnx_int8_minmax", "onnx_int8_entropy", "onnx_int8_nncf")

# How tune measures latency unless told otherwise: more calls per process than `edgecls bench`
# (batch 1 only, the number a budget is judged on), in fewer processes.
TUNE_BENCH = BenchConfig(runs=200, warmup=20, repeats=3)


@dataclass(frozen=True)
class TuneConfig:
    """`edgecls tune` options (edgecls.tune): budgets, objective, and the search space."""

    # Points of top-1 against the float model, on the validation split.
    max_drop: float | None = option(None, "top-1 points a candidate may lose against the float model", range=(0, 100),
                                    metavar="POINTS")
    max_bytes: int | None = option(None, "largest file (or gzip size with --size gzip)", metavar="N", range=(1, 10 ** 15))
    size_measure: str = option("file", "what --max-bytes and --objective size count", flag="--size", choices=SIZE_MEASURES)
    max_latency_ms: float | None = option(None, "largest p50 batch-1 latency", metavar="MS", range=(0, 10 ** 9, "above"))
    # Microcontroller budgets (edgecls.micro): only full-integer TFLite files TFLite Micro runs are
    # candidates; RAM is the tensor arena plus one input and one output buffer, flash the model array.
    max_ram_kb: float | None = option(None, "microcontroller RAM: the TFLite Micro tensor arena plus one input and one "
                                            "output buffer (only full-integer TFLite files TFLite Micro runs are then "
                                            "candidates)", metavar="KB", range=(0, 10 ** 9, "above"))
    max_flash_kb: float | None = option(None, "microcontroller flash for the model array", metavar="KB",
                                        range=(0, 10 ** 9, "above"))
    board: str | None = option(None, "the device the RAM and flash budgets describe, named in the answer", metavar="NAME")
    objective: str = option("latency", "what the pick minimizes (or maximizes, accuracy) within the budgets",
                            choices=OBJECTIVES)
    threads: tuple[int, ...] = option((1,), "thread counts to measure each file at", metavar="N[,N...]", range=(1, 1024))
    variants: tuple[str, ...] = option(TUNE_VARIANTS, "post-training candidates", choices=TUNE_VARIANTS, metavar="VARIANT")
    sparsities: tuple[float, ...] = option((0.5, 0.75), "pruning levels of the fine-tuned candidates", metavar="S[,S...]",
                                           range=(0, 1, "open"))
    sparsity_allocations: tuple[str, ...] = option(("uniform",), "how the pruned candidates spread their sparsity over "
                                                                 "the layers (see export --sparsity-allocation)",
                                                   choices=SPARSITY_ALLOCATIONS)
    fine_tune: str = option("auto", "pruning and QAT candidates: only where post-training ones cannot meet the budgets "
                                    "or may be beaten (auto), always, or never", choices=FINE_TUNE_MODES)
    # Held out of the training images to choose on (None: 2,000 or a fifth, fewer).
    validation_images: int | None = option(None, "training images held out to choose on (default 2,000, or a fifth of "
                                                 "them if fewer)", range=(100, BIG))
    # What each stage's export takes (fine-tuning epochs, distillation, calibration count ...); tune
    # sets its formats, seed and the fine-tuned variants' budget itself.
    export: ExportConfig = ExportConfig()
    # How each candidate's latency is measured (runs, warmup, fresh processes); tune sets the
    # variants and threads itself.
    bench: BenchConfig = TUNE_BENCH
    # [user@]device: latency measured there over SSH (edgecls.bench.remote).
    hosts: tuple[str, ...] = option((), "measure latency on this device over SSH (repeat for several alike devices: the "
                                        "work is shared)", flag="--host", metavar="[USER@]DEVICE")
    remote_python: str = option("python3", "python on the devices")
    remote_dir: str | None = option(None, f"where bundles go on the devices, relative to their home (default "
                                          f"{DEFAULT_REMOTE_DIR})")
    ssh_config: str | None = option(None, "an ssh_config file (ssh -F) naming the devices")
    jobs: int = option(2, "post-training exports side by side (TFLite and ONNX)", range=(1, 64))
    keep_frontier: bool = option(False, "the bundle holds the whole front, not only the winner")
    test: bool = True  # read the test split once, for the winner, after the choice
    max_test_images: int | None = option(None, "read at most this many test images for the winner's figure", range=(1, BIG))
    seed: int = option(0, "seed of every random draw and fine-tune", range=(0, 2 ** 32 - 1))

    def __post_init__(self):
        for name in ("threads", "variants", "sparsities", "sparsity_allocations", "hosts"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _need(self.max_drop is None or (isinstance(self.max_drop, (int, float)) and 0 <= self.max_drop < 100),
             f"max_drop must be a number of accuracy points between 0 and 100, got {self.max_drop!r}")
        _need(self.max_bytes is None or (isinstance(self.max_bytes, int) and self.max_bytes > 0),
             f"max_bytes must be a positive number of bytes, got {self.max_bytes!r}")
        _need(self.max_latency_ms is None or (isinstance(self.max_latency_ms, (int, float)) and self.max_latency_ms > 0),
             f"max_latency_ms must be a positive number of milliseconds, got {self.max_latency_ms!r}")
        for name in ("max_ram_kb", "max_flash_kb"):
            value = getattr(self, name)
            _need(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e9),
                 f"{name} must be a positive number of kilobytes, got {value!r}")
        _need(self.board is None or (isinstance(self.board, str) and 0 < len(self.board) <= 100),
             f"board must be a name of at most 100 characters, got {self.board!r}")
        _need(self.size_measure in SIZE_MEASURES, f"size_measure must be one of {', '.join(SIZE_MEASURES)}, got {self.size_measure!r}")
        _need(self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        _need(self.threads and all(isinstance(t, int) and t >= 1 for t in self.threads),
             f"threads must be positive integers, got {self.threads!r}")
        unknown = [v for v in self.variants if v not in TUNE_VARIANTS]
        _need(self.variants and not unknown, f"variants must be post-training variants among {', '.join(TUNE_VARIANTS)}; "
                                            f"got {', '.join(unknown) or 'none'}")
        _need(all(isinstance(s, (int, float)) and 0 < s < 1 for s in self.sparsities),
             f"sparsities must lie between 0 and 1 (exclusive), got {self.sparsities!r}")
        _need(self.sparsity_allocations and all(a in SPARSITY_ALLOCATIONS for a in self.sparsity_allocations),
             f"sparsity_allocations must be among {', '.join(SPARSITY_ALLOCATIONS)}, got {self.sparsity_allocations!r}")
        _need(self.fine_tune in FINE_TUNE_MODES, f"fine_tune must be auto, always or never, got {self.fine_tune!r}")
        _need(self.validation_images is None or isinstance(self.validation_images, int) and self.validation_images >= 100,
             f"validation_images must be at least 100, got {self.validation_images!r}")
        _need(isinstance(self.export, ExportConfig), f"export must be an ExportConfig, got {type(self.export).__name__}")
        _need(isinstance(self.bench, BenchConfig), f"bench must be a BenchConfig, got {type(self.bench).__name__}")
        _need(isinstance(self.jobs, int) and self.jobs >= 1, f"jobs must be a positive integer, got {self.jobs!r}")
        _need(self.max_test_images is None or (isinstance(self.max_test_images, int) and self.max_test_images >= 1),
             f"max_test_images must be a positive integer, got {self.max_test_images!r}")
