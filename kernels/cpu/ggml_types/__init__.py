"""One module per GGML type. Each defines GGML_TYPE, BLOCK (values per block), TYPE_SIZE
(bytes per block) and `dequant_block(w, b, out, o)`, which writes the BLOCK values of block b of
the row bytes `w` to out[o:o + BLOCK]. VIEW is the dtype rows are read as. A module may also
define `dot4_block(w0, w1, w2, w3, b, x, xd, a0, a1, a2, a3, tmp)`, which adds step b of four
rows' dot products with x to their vector accumulators (STEP values per step, BLOCK by default),
and `derive_x(x)`, what those dot products need from x, computed once per matvec and passed as
xd (x itself by default). See `quant_drivers.py`. The layouts follow llama.cpp's
`ggml-common.h` and gguf-py's `quants.py`; the float arithmetic is gguf-py's, operation by
operation, so dequantization is bit-exact.
"""
