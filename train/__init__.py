"""The workstation side: data, augmentation, model registry, QAT, training, evaluation (TensorFlow).

Importing ``train`` (any module of it) selects Keras 2 (``tf_keras``) for TensorFlow, once, here: the QAT
library (tensorflow-model-optimization) does not support Keras 3. Import ``train`` before TensorFlow."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
