"""FPGA deployment of fixed-point models: QONNX files and hls4ml projects, checked bit-exact.

Stage order: it reads models the quantization pass wrote (``optimizer.quantization``) and is
called by the search's export; it imports nothing from ``optimizer.search``.

* :mod:`.qonnx_convert`: QDQ -> QONNX ``Quant`` nodes with the true widths;
* :mod:`.compare`: onnxruntime on the QDQ model against qonnx's executor or the compiled
  hls4ml emulation, exactly;
* :mod:`.hls_graph`, :mod:`.precision`: the graph hls4ml reads and the per-layer types taken
  from the model's formats; :mod:`.hls_project` writes the project with hls4ml's writer;
* :mod:`.resources`: resource proxies computed from the graph (no synthesis here);
* :mod:`.export`: the two entry points the CLI and the search call.

hls4ml and qonnx are the optional ``fpga`` extra and are imported lazily (:mod:`.extra`).
"""
