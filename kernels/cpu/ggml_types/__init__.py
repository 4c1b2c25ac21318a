"""One module per GGML type. Each defines GGML_TYPE, BLOCK (values per block), TYPE_SIZE
(bytes per block) and `dequant_block(w, b, out, o)`, which writes the BLOCK values of block b of
the row bytes `w` to out[o:o + BLOCK]; it may also define a faster `dot_block(w, b, x, o)`
returning the dot product of block b with x[o:o + BLOCK]. The layouts follow llama.cpp's
`ggml-common.h` and gguf-py's `quants.py`; the float arithmetic is gguf-py's, operation by
operation, so dequantization is bit-exact.
"""
