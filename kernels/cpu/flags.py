"""Compilation flags shared by the kernels."""

# Reassociation lets float reductions vectorize. No 'nnan'/'ninf': attention masks with -inf and
# weights may hold inf or NaN, which must propagate as they would without fast-math.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
