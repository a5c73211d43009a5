"""Using a trained model: :mod:`~faceverify.use.model` (``load_model`` -> ``FaceModel``: faces,
embed, verify, calibration), :mod:`~faceverify.use.photos` (a folder or list of photos, a CSV of
pairs) and :mod:`~faceverify.use.model_export` (TorchScript / ONNX with metadata). The top of the
stack beside the commands: it may use every layer below, nothing below uses it."""
