"""Every allowed value of a recipe key, defined once (plain tables, no imports).

The recipe validator checks against these tables; the modules that implement each value (heads, freezing,
schedules, the trainer, the data pipeline, the cache) import the same tables, so a new value is added in one
place and in the code that implements it. Every name here is public.
"""

# === model and stages ===

OPTIMIZERS = ("adam", "adamw", "sgd")  # training.model.make_optimizer
SCHEDULES = ("constant", "cosine", "exponential")  # schedules.lr_at
BATCHNORM_POLICIES = ("frozen", "follow", "train")  # freezing.apply_trainable (DESIGN.md §4)
# Input scaling put at the model's input (architectures.preprocessing_layer): tf = x/127.5 - 1, torch = ImageNet
# mean/std, caffe = BGR minus ImageNet means, none = raw 0-255, unit = x/255 (the seeds' `rescale=1./255`).
PREPROCESS_MODES = ("tf", "torch", "caffe", "none", "unit")
POOLINGS = ("avg", "max", "flatten")  # heads.add_head
MERGES = ("add", "concat")  # surgery.add_skip
CALIBRATION_METHODS = ("temperature", "none")  # `calibrate:`, calibration.fit_temperature (after training)
# `precision:` Keras mixed-precision policies (training.model.precision_policy); the head's output stays float32.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
LABEL_SMOOTHING_MAX = 0.3  # `stages[i].label_smoothing` in [0, 0.3]: more flattens the targets past usefulness
# Block name -> keyword arguments its function in `inceptune.blocks` accepts (besides the input and `name`).
INSERT_BLOCKS = {
    "residual_inception": ("filters", "out_channels", "scale", "activation", "zero_init"),
    "inception": ("filters_1x1", "filters_3x3_reduce", "filters_3x3", "filters_5x5_reduce", "filters_5x5",
                  "filters_pool"),
}

# === distribution (`distribute:`, inceptune.distribute) ===

# none: one device; auto: mirrored when more than one GPU is visible; mirrored: tf.distribute.MirroredStrategy (the
# devices of one machine); multi-worker: tf.distribute.MultiWorkerMirroredStrategy (machines named by TF_CONFIG);
# jax-data-parallel: keras.distribution.DataParallel on the JAX backend (refused: not implemented, see the module).
DISTRIBUTE_STRATEGIES = ("none", "auto", "mirrored", "multi-worker", "jax-data-parallel")
SCALE_LR_RULES = ("none", "linear")  # linear: each stage's lr times the replicas (Goyal et al. 2017)

# === cache ===

CACHE_MODES = ("auto", "off")
CACHE_DTYPES = ("float32", "float16")

# === data ===

RESIZE_MODES = ("stretch", "crop", "pad")  # data.decode.resize_image
SPLITS = ("train", "val", "test")
SPLIT_METHODS = ("stable-hash", "stratified")  # data.splits.assign_splits
BALANCE_MODES = ("none", "class-weight", "oversample")  # data.pipeline

# Augmentation op name -> what its parameter means (the Keras layer each op builds is in data.augment).
AUGMENT_OPS = {
    "flip": "horizontal | vertical | horizontal_and_vertical (true means horizontal)",
    "rotation": "maximum angle in degrees, e.g. 40",
    "translation": "maximum shift as a fraction of the size, e.g. 0.2, or [height, width]",
    "zoom": "maximum zoom in/out as a fraction, e.g. 0.2 (aspect kept), or [height, width]",
    "shear": "maximum shear as a fraction of the size, e.g. 0.2, or [x, y]",
    "contrast": "maximum contrast change as a fraction, e.g. 0.1",
    "brightness": "maximum brightness change as a fraction of the value range, e.g. 0.1",
}

AUGMENT_PRESETS = {
    "none": [],
    "light": [{"flip": "horizontal"}, {"rotation": 10}, {"zoom": 0.1}],
    "standard": [{"flip": "horizontal"}, {"rotation": 20}, {"translation": 0.1}, {"zoom": 0.15},
                 {"contrast": 0.1}],
    # The seeds' ImageDataGenerator(rotation_range=40, width/height_shift_range=0.2, shear_range=0.2,
    # zoom_range=0.2, horizontal_flip=True), plus mild photometric changes.
    "heavy": [{"flip": "horizontal"}, {"rotation": 40}, {"translation": 0.2}, {"shear": 0.2}, {"zoom": 0.2},
              {"contrast": 0.2}, {"brightness": 0.2}],
}

FILL_MODES = ("reflect", "wrap", "constant", "nearest")  # the geometric ops' `fill_mode`

# === test-time augmentation (`--tta`, tta.parse_tta) ===

TTA_WORDS = ("none", "flip", "crops")  # joined with "+" (flip+crops); a whole number K means K crops
TTA_MAX_CROPS = 10  # the full image, the centre, 4 corners and 4 edge midpoints
