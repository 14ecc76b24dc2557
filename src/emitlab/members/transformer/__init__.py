"""The transformer member: a fine-tuned encoder (``member``), its network and Trainer (``model``),
losses (``losses``), the offline me5-small converter (``me5``) and the runtimes that predict with a
saved network (``backends``: torch, ONNX, ONNX int8)."""
