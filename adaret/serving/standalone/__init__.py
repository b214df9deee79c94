"""Python-backend ``model.py`` files that ``adaret triton-repo`` copies into a model repository as they are.

They run inside a datacenter Triton's Python backend, where adaret is not installed: each needs only numpy, the
backend's ``triton_python_backend_utils`` and (the tokenizer) ``tokenizers``. Their settings come from the model's
``config.pbtxt`` parameters, which ``adaret.serving.configs`` fills in from the export.
"""
