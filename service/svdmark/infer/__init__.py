"""Model registry (packaged ``svdmark/data/models/`` plus installed models and their activation state) and
onnxruntime execution.

Public API::

    from svdmark.infer import ModelRegistry, Runtime, ModelOutput, Candidate
    spec = ModelRegistry().active(Task.WML)        # sha256-verified ModelSpec
    output = Runtime().run(spec, volume)           # ModelOutput
    check = self_test(spec, Runtime())             # SelfTestResult (reference volumes beside the model)

Only this package imports onnxruntime.
"""
from .registry import ModelRegistry, Pinned, default_models_dir, managed, sha256_file
from .runtime import DEFAULT_PROVIDERS, Candidate, ModelOutput, Runtime
from .selftest import SelfTestResult, self_test

__all__ = [
    "ModelRegistry", "Pinned", "managed", "Runtime", "ModelOutput", "Candidate", "DEFAULT_PROVIDERS",
    "default_models_dir", "sha256_file", "self_test", "SelfTestResult",
]
