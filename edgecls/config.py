"""Typed, validated configuration for each stage. Invalid values fail when the config is built,
with a message naming the field, never deep inside a run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import ConfigError

# What tune optimizes and how it counts a file's size (edgecls.selection reads them from here: a
# config never depends on a later pipeline stage).
OBJECTIVES = ("latency", "size", "accuracy")
SIZE_MEASURES = ("file", "gzip")

RECIPES = ("edgecls", "tutorial")

# What the report's recommendation minimizes among the variants within its accuracy rule.
REPORT_OBJECTIVES = ("latency", "size")


@dataclass(frozen=True)
class ReportConfig:
    """The report's recommendation, per device: the fastest (`objective` "latency") or smallest
    ("size") variant within `max_drop` points of top-1 of the most accurate float variant measured
    on that device."""

    max_drop: float = 1.0
    objective: str = "latency"

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

    data: str = "cifar10-sample"
    arch: str = "resnet8"
    out: str = "runs/train"
    epochs: int = 30
    batch_size: int = 128
    recipe: str = "edgecls"
    learning_rate: float | None = None
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    warmup_epochs: float = 2.0
    augment: bool = True
    cutout: int = 0
    cutmix: float = 0.0
    val_fraction: float = 0.1
    patience: int = 15
    image_size: int = 32
    seed: int = 0
    resume: bool = False
    init_from: str | None = None
    swa_epochs: int = 0
    swa_learning_rate: float | None = None
    teacher: str | None = None
    distill_alpha: float = 0.9
    distill_temperature: float | None = None
    verbose: int | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)

        need(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs!r}")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch_size must be a positive integer, got {self.batch_size!r}")
        need(self.recipe in RECIPES, f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        need(self.learning_rate is None or self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        need(0 <= self.val_fraction < 0.5, f"val_fraction must be in [0, 0.5), got {self.val_fraction}")
        need(isinstance(self.patience, int) and self.patience >= 0, f"patience must be an integer >= 0 (0 disables early stopping), got {self.patience!r}")
        need(isinstance(self.image_size, int) and 8 <= self.image_size <= 1024, f"image_size must be an integer in 8..1024, got {self.image_size!r}")
        need(self.verbose in (None, 0, 1, 2), f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        need(bool(str(self.out).strip()), "out must name a directory")
        need(isinstance(self.swa_epochs, int) and 0 <= self.swa_epochs, f"swa_epochs must be an integer >= 0, got {self.swa_epochs!r}")
        if self.swa_epochs:
            need(self.recipe != "tutorial", "weight averaging (swa_epochs) belongs to the 'edgecls' recipe, not 'tutorial'")
            need(2 <= self.swa_epochs < self.epochs,
                 f"swa_epochs must be at least 2 and less than epochs ({self.epochs}) so some epochs come before the averaging; got {self.swa_epochs}")
        need(self.swa_learning_rate is None or self.swa_learning_rate > 0, f"swa_learning_rate must be positive, got {self.swa_learning_rate}")
        need(isinstance(self.cutout, int) and 0 <= self.cutout < self.image_size,
             f"cutout must be an integer from 0 (off) to less than image_size ({self.image_size}), got {self.cutout!r}")
        if self.cutout:
            need(self.augment and self.recipe != "tutorial", "cutout is augmentation: it needs augment on and the 'edgecls' recipe")
        need(isinstance(self.cutmix, (int, float)) and not isinstance(self.cutmix, bool) and 0 <= self.cutmix <= 1,
             f"cutmix is the probability that a batch is mixed, from 0 (off) to 1, got {self.cutmix!r}")
        if self.cutmix:
            need(self.augment and self.recipe != "tutorial", "cutmix is augmentation: it needs augment on and the 'edgecls' recipe")
        need(0 <= self.distill_alpha <= 1, f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        need(self.distill_temperature is None or self.distill_temperature > 0,
             f"distill_temperature must be positive, got {self.distill_temperature}")
        if self.teacher is not None:
            need(bool(str(self.teacher).strip()), "teacher must name a finished 'edgecls train' directory")
            need(self.recipe != "tutorial", "a teacher (distillation) belongs to the 'edgecls' recipe, not 'tutorial'")

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


@dataclass(frozen=True)
class ExportConfig:
    """Optimization and export options (see `edgecls export --help`).

    formats: variant names or groups ("default", "all", "engines", "tflite", "onnx", "int8"); see
    edgecls.export.VARIANTS and GROUPS.
    """

    formats: tuple[str, ...] = ("default",)
    sparsity: float = 0.5
    sparsity_allocation: str = "uniform"  # or "lamp": per-layer sparsities from LAMP scores (edgecls.optimize.prune)
    structured_2x4: bool = False
    skip_layers: tuple[str, ...] = ()
    prune_epochs: int = 2
    prune_learning_rate: float = 0.01
    qat_epochs: int = 1
    qat_learning_rate: float = 0.005
    qat_calibration: bool = True  # start QAT's activation ranges from the representative images
    distill: bool = False  # pruning and QAT fine-tunes also learn the float model's soft outputs
    distill_alpha: float = 0.9
    distill_temperature: float = 4.0
    fine_tune_batch_size: int = 128
    calibration_count: int = 300
    calibration_seed: int = 0
    float_io: bool = False
    int8_weights: str = "per-channel"
    strip_names: bool = False
    onnx_opset: int = 17
    onnx_int8_method: str = "ort_qdq"
    onnx_int8_scheme: str = "u8s8_rr"  # edgecls.export.formats.onnx.INT8_SCHEMES
    nchw: bool = False
    max_eval_images: int | None = None
    optimized: str | None = None  # an `edgecls optimize` folder whose pruned/QAT models export reuses
    calibration_data: str | None = None  # unlabelled images for int8 calibration (default: --data's training split)
    validation_timeout_s: float = 600.0  # a converted file whose validation runs longer is a failed row (hung)
    isolate: bool = True  # export in a worker process restarted after a native crash (edgecls.export.worker)
    diagnose: bool = True  # per-layer error of each post-training quantized variant (edgecls.export.diagnose)
    max_drop: float | None = None  # accuracy budget in points for int8 variants (edgecls.export.repair)
    # Points a fine-tuned variant (pruned, QAT) may lose against the model the user gave, on the
    # held-out images, before it fails (--max-drop, when given, is the budget instead).
    fine_tuned_max_drop: float = 5.0
    repair_images: int = 2000  # training images (not calibration ones) the budget and the search are judged on
    repair_max_layers: int = 8  # layers kept in float at most before the budget counts as missed
    calibration_search: tuple[int, ...] = ()  # calibration sizes to choose from on the validation split
    calibration_draws: int = 3  # random draws per size in the search (edgecls.export.calibration)
    micro: bool = False  # check full-integer TFLite variants under TFLite Micro, write C sources (edgecls.micro)
    micro_images: int = 1000  # held-out images run under TFLite Micro per variant
    seed: int = 0
    verbose: int = 0
    tolerances: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)

        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "skip_layers", tuple(self.skip_layers))
        need(self.formats, "formats must name at least one variant")
        need(isinstance(self.sparsity, (int, float)) and 0.0 < self.sparsity < 1.0,
             f"sparsity must be between 0 and 1 (exclusive), got {self.sparsity}")
        need(self.sparsity_allocation in SPARSITY_ALLOCATIONS,
             f"sparsity_allocation must be one of {', '.join(SPARSITY_ALLOCATIONS)}, got {self.sparsity_allocation!r}")
        need(not (self.structured_2x4 and self.sparsity_allocation != "uniform"),
             "2:4 structured sparsity is 50% in every layer; drop --sparsity-allocation or --structured-2x4")
        need(isinstance(self.prune_epochs, int) and self.prune_epochs >= 1, f"prune_epochs must be >= 1, got {self.prune_epochs!r}")
        need(self.prune_learning_rate > 0, f"prune_learning_rate must be positive, got {self.prune_learning_rate}")
        need(self.qat_learning_rate > 0, f"qat_learning_rate must be positive, got {self.qat_learning_rate}")
        need(isinstance(self.qat_epochs, int) and self.qat_epochs >= 1, f"qat_epochs must be >= 1, got {self.qat_epochs!r}")
        need(0.0 < self.distill_alpha <= 1.0, f"distill_alpha must be in (0, 1], got {self.distill_alpha}")
        need(self.distill_temperature > 0, f"distill_temperature must be positive, got {self.distill_temperature}")
        need(isinstance(self.fine_tune_batch_size, int) and self.fine_tune_batch_size >= 1,
             f"fine_tune_batch_size must be >= 1, got {self.fine_tune_batch_size!r}")
        need(isinstance(self.calibration_count, int) and self.calibration_count >= MIN_CALIBRATION,
             f"calibration_count must be at least {MIN_CALIBRATION} real training images, got {self.calibration_count!r}")
        need(self.int8_weights in INT8_WEIGHT_SCALES,
             f"int8_weights must be one of {', '.join(INT8_WEIGHT_SCALES)}, got {self.int8_weights!r}")
        need(self.onnx_int8_method in ONNX_INT8_METHODS,
             f"onnx_int8_method must be one of {', '.join(ONNX_INT8_METHODS)}, got {self.onnx_int8_method!r}")
        need(self.onnx_int8_scheme in ONNX_INT8_SCHEMES,
             f"onnx_int8_scheme must be one of {', '.join(ONNX_INT8_SCHEMES)}, got {self.onnx_int8_scheme!r}")
        need(isinstance(self.onnx_opset, int) and 13 <= self.onnx_opset <= 21, f"onnx_opset must be in 13..21, got {self.onnx_opset!r}")
        need(self.max_drop is None or (isinstance(self.max_drop, (int, float)) and 0 <= self.max_drop < 100),
             f"max_drop must be a number of accuracy points between 0 and 100, got {self.max_drop!r}")
        object.__setattr__(self, "calibration_search", tuple(self.calibration_search))
        need(all(isinstance(c, int) and c >= MIN_CALIBRATION for c in self.calibration_search),
             f"calibration_search sizes must be at least {MIN_CALIBRATION} images each, got {self.calibration_search!r}")
        need(isinstance(self.calibration_draws, int) and 1 <= self.calibration_draws <= 20,
             f"calibration_draws must be between 1 and 20, got {self.calibration_draws!r}")
        need(not (self.calibration_search and self.calibration_data),
             "calibration_search draws from the training split; drop calibration_data (--calibration-data) or the search")
        need(isinstance(self.repair_images, int) and self.repair_images >= 50,
             f"repair_images must be at least 50, got {self.repair_images!r}")
        need(isinstance(self.repair_max_layers, int) and self.repair_max_layers >= 1,
             f"repair_max_layers must be at least 1, got {self.repair_max_layers!r}")
        need(self.max_eval_images is None or (isinstance(self.max_eval_images, int) and self.max_eval_images >= 1),
             f"max_eval_images must be a positive integer, got {self.max_eval_images!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["formats"] = list(self.formats)
        d["skip_layers"] = list(self.skip_layers)
        return d


@dataclass(frozen=True)
class BenchConfig:
    variants: tuple[str, ...] = ()
    threads: int | None = 1
    warmup: int = 20
    runs: int = 40
    batch: int = 32
    max_images: int | None = None
    # A Keras model file to measure beside the exported variants (needs TensorFlow), so the table
    # shows what leaving TensorFlow buys. Its row is named "keras_fp32".
    keras: str | None = None
    # Test-time augmentation (edgecls.runtime.TTA_MODES): "flip" averages each image with its mirror
    # image, in every row, the Keras one too: latency, throughput and accuracy then include it.
    tta: str | None = None
    # Each variant is measured in `repeats` fresh processes, the variants taking turns (round-robin),
    # so slow drift of a shared host lands on every variant alike. Accuracy is measured in the first
    # round only; latency and throughput are the median round's, and every round's p50 and
    # throughput are kept (row "repeats") so the spread between processes is on record. Five give
    # each p50 an interval the report's recommendation and front rely on: two equally fast files
    # separate completely by chance 2 times in 252 (edgecls.selection.faster_beyond_noise). The
    # Keras row, a reference far slower than any exported file, is measured in the first round only.
    repeats: int = 5

    def __post_init__(self):
        from .runtime import check_tta

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

# Fewer images than this do not pin down activation ranges; int8 accuracy then depends on luck.
MIN_CALIBRATION = 32


# How tune measures latency unless told otherwise: more calls per process than `edgecls bench`
# (batch 1 only, the number a budget is judged on), in fewer processes.
TUNE_BENCH = BenchConfig(runs=200, warmup=20, repeats=3)


@dataclass(frozen=True)
class TuneConfig:
    """`edgecls tune` options (edgecls.tune): budgets, objective, and the search space."""

    max_drop: float | None = None  # points of top-1 against the float model, on the validation split
    max_bytes: int | None = None
    size_measure: str = "file"  # what --max-bytes and the size objective count: "file" or "gzip"
    max_latency_ms: float | None = None  # p50 at batch 1
    # Microcontroller budgets (edgecls.micro): only full-integer TFLite files TFLite Micro runs are
    # candidates; RAM is the tensor arena plus one input and one output buffer, flash the model array.
    max_ram_kb: float | None = None
    max_flash_kb: float | None = None
    board: str | None = None  # the device the micro budgets describe, named in the answer
    objective: str = "latency"  # latency | size | accuracy
    threads: tuple[int, ...] = (1,)
    variants: tuple[str, ...] = TUNE_VARIANTS  # the post-training candidates
    sparsities: tuple[float, ...] = (0.5, 0.75)
    sparsity_allocations: tuple[str, ...] = ("uniform",)
    fine_tune: str = "auto"  # auto | always | never (pruning and QAT candidates)
    validation_images: int | None = None  # held out of the training images to choose on (None: 2,000 or a fifth, fewer)
    # What each stage's export takes (fine-tuning epochs, distillation, calibration count ...); tune
    # sets its formats, seed and the fine-tuned variants' budget itself.
    export: ExportConfig = ExportConfig()
    # How each candidate's latency is measured (runs, warmup, fresh processes); tune sets the
    # variants and threads itself.
    bench: BenchConfig = TUNE_BENCH
    hosts: tuple[str, ...] = ()  # [user@]device: latency measured there over SSH (edgecls.bench.remote)
    remote_python: str = "python3"
    remote_dir: str | None = None  # where on the devices bundles go (None: edgecls.bench.remote's default)
    ssh_config: str | None = None  # an ssh_config file (ssh -F); default: the user's own
    jobs: int = 2  # post-training exports run side by side (TFLite and ONNX)
    keep_frontier: bool = False  # OUT/bundle holds the whole front, not only the winner
    test: bool = True  # read the test split once, for the winner, after the choice
    max_test_images: int | None = None
    seed: int = 0

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)

        for name in ("threads", "variants", "sparsities", "sparsity_allocations", "hosts"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        need(self.max_drop is None or (isinstance(self.max_drop, (int, float)) and 0 <= self.max_drop < 100),
             f"max_drop must be a number of accuracy points between 0 and 100, got {self.max_drop!r}")
        need(self.max_bytes is None or (isinstance(self.max_bytes, int) and self.max_bytes > 0),
             f"max_bytes must be a positive number of bytes, got {self.max_bytes!r}")
        need(self.max_latency_ms is None or (isinstance(self.max_latency_ms, (int, float)) and self.max_latency_ms > 0),
             f"max_latency_ms must be a positive number of milliseconds, got {self.max_latency_ms!r}")
        for name in ("max_ram_kb", "max_flash_kb"):
            value = getattr(self, name)
            need(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e9),
                 f"{name} must be a positive number of kilobytes, got {value!r}")
        need(self.board is None or (isinstance(self.board, str) and 0 < len(self.board) <= 100),
             f"board must be a name of at most 100 characters, got {self.board!r}")
        need(self.size_measure in SIZE_MEASURES, f"size_measure must be one of {', '.join(SIZE_MEASURES)}, got {self.size_measure!r}")
        need(self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        need(self.threads and all(isinstance(t, int) and t >= 1 for t in self.threads),
             f"threads must be positive integers, got {self.threads!r}")
        unknown = [v for v in self.variants if v not in TUNE_VARIANTS]
        need(self.variants and not unknown, f"variants must be post-training variants among {', '.join(TUNE_VARIANTS)}; "
                                            f"got {', '.join(unknown) or 'none'}")
        need(all(isinstance(s, (int, float)) and 0 < s < 1 for s in self.sparsities),
             f"sparsities must lie between 0 and 1 (exclusive), got {self.sparsities!r}")
        need(self.sparsity_allocations and all(a in SPARSITY_ALLOCATIONS for a in self.sparsity_allocations),
             f"sparsity_allocations must be among {', '.join(SPARSITY_ALLOCATIONS)}, got {self.sparsity_allocations!r}")
        need(self.fine_tune in ("auto", "always", "never"), f"fine_tune must be auto, always or never, got {self.fine_tune!r}")
        need(self.validation_images is None or isinstance(self.validation_images, int) and self.validation_images >= 100,
             f"validation_images must be at least 100, got {self.validation_images!r}")
        need(isinstance(self.export, ExportConfig), f"export must be an ExportConfig, got {type(self.export).__name__}")
        need(isinstance(self.bench, BenchConfig), f"bench must be a BenchConfig, got {type(self.bench).__name__}")
        need(isinstance(self.jobs, int) and self.jobs >= 1, f"jobs must be a positive integer, got {self.jobs!r}")
        need(self.max_test_images is None or (isinstance(self.max_test_images, int) and self.max_test_images >= 1),
             f"max_test_images must be a positive integer, got {self.max_test_images!r}")
